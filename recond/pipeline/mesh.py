"""Mesh stage: density grid -> marching cubes -> the object alone, at a bounded size.

The grid itself is the device part's work (TripoSR.density_grid, recond/pipeline/runner.py);
this stage is the host part's first.

A marching-cubes surface at 256^3 has ~150k-1.7M faces and often small floating blobs. Every
later stage (unwrap, bake, files, turntable, viewer) costs in proportion to the faces, and the
blobs shrink the turntable's framing. So the stage drops pieces that are small next to the
main object, then simplifies to ``target_faces`` keeping the surface's topology (a closed
marching-cubes surface stays a printable solid, issue 15: recond.pipeline.topology) where the
surface's handles and bodies leave room for that, and degrades where they do not (a noisy
field: recond.pipeline.budget, issue 22), and only then colours the vertices (when no texture
is baked: the texture carries the colour). It records what it published: solid or not,
bodies, and what it did to a noisy surface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import trimesh

from recond.config import JobSettings
from recond.errors import InputError
from recond.pipeline.budget import Budgeting, coarser_for_noise, drop_floaters, grid_within_faces, to_budget
from recond.pipeline.topology import solid_facts
from recond.triposr.isosurface import marching_cubes, unit_to_box

NOT_A_SOLID = ("the surface is not a closed solid (it has holes or edges shared by more than two "
               "faces), so mesh.stl needs repair before printing")

@dataclass(frozen=True)
class MeshFacts:
    """How the mesh came to be and whether it is a printable solid, for job.json."""

    marching_cubes_faces: int
    pieces: int
    pieces_dropped: int
    faces_after_floaters: int
    faces: int
    watertight: bool
    is_volume: bool
    bodies: int  # one per kept piece, when the surface is closed
    # The simplification's shape error (topology.hausdorff_to_diagonal) is not measured per job:
    # 0.7 of ~6 CPU-s of the host part to report one number (issue 23). tests/test_result_files.py
    # holds bench_chair to its bound, benchmarks/bench_simplify.py prints it.
    # How it reached the face budget (recond.pipeline.budget, issue 22): the grid meshed, the
    # handles counted before simplifying, whether topology was kept, and what was done instead
    # when the surface was noisy.
    grid_resolution: int = 0
    handles: int = 0
    topology_kept: bool = True
    degraded: tuple[str, ...] = ()
    noisy_warning: str | None = None

    def as_record(self) -> dict[str, Any]:
        record = asdict(self)
        del record["noisy_warning"]  # in the job's warnings
        record["degraded"] = list(self.degraded)
        return record

    def warnings(self) -> list[str]:
        """What the job's warnings should say about the surface: nothing when it is a solid
        reached the budget as it was."""
        return [*([self.noisy_warning] if self.noisy_warning else []), *([] if self.is_volume else [NOT_A_SOLID])]


@dataclass(frozen=True)
class KeptSurface:
    """The marching-cubes surface with its floaters dropped: what the stage simplifies."""

    mesh: trimesh.Trimesh
    marching_cubes_faces: int
    pieces: int
    pieces_dropped: int


def build_mesh(density_grid: torch.Tensor, color_at: Callable[[np.ndarray], np.ndarray], radius: float,
               settings: JobSettings, report: Callable[[float], None]) -> tuple[trimesh.Trimesh, MeshFacts]:
    """The object's coloured surface (z up, model space) from the density grid the device part
    made; an empty surface is the picture's fault. ``color_at`` is the model's colour field."""
    budgeting = Budgeting(int(density_grid.shape[0]))
    kept = kept_surface(density_grid, radius, settings, budgeting)
    coarser = coarser_for_noise(budgeting.measure(kept.mesh, kept.pieces - kept.pieces_dropped),
                                len(kept.mesh.faces), settings.target_faces)
    if coarser is not None:
        kept = kept_surface(density_grid, radius, settings, budgeting, max_faces=coarser)
        budgeting.measure(kept.mesh, kept.pieces - kept.pieces_dropped)
    report(0.6)
    simple = to_budget(kept.mesh, settings.target_faces, kept.pieces - kept.pieces_dropped,
                       settings.floater_fraction, budgeting)
    report(0.8)
    colored = simple if settings.bake_texture else with_vertex_colors(simple, color_at)  # baked: unused
    report(0.9)
    solid = solid_facts(simple)
    handles = budgeting.roughness.handles if budgeting.roughness else 0
    facts = MeshFacts(kept.marching_cubes_faces, kept.pieces, kept.pieces_dropped, len(kept.mesh.faces),
                      len(colored.faces), solid.watertight, solid.is_volume, solid.bodies,
                      budgeting.grid_resolution, handles, budgeting.topology_kept,
                      tuple(budgeting.steps), budgeting.warning())
    return colored, facts


def kept_surface(density_grid: torch.Tensor, radius: float, settings: JobSettings,
                 budgeting: Budgeting | None = None, max_faces: int | None = None) -> KeptSurface:
    """Marching cubes on the density grid, or on a coarser one when its surface would exceed
    ``max_faces`` (None: ``max_surface_faces``; noted in ``budgeting``), and floaters dropped
    (z up, model space, uncoloured)."""
    budgeting = budgeting or Budgeting(int(density_grid.shape[0]))
    grid = grid_within_faces(density_grid.detach().cpu().float(), settings.mc_threshold,
                             min(max_faces or settings.max_surface_faces, settings.max_surface_faces), budgeting)
    raw = surface(grid, settings.mc_threshold, radius)
    if len(raw.faces) == 0:
        raise InputError(
            "the model found no object in this picture (its density never reaches the surface "
            f"threshold {settings.mc_threshold}); try a clearer photo of a single object"
        )
    kept, pieces, dropped = drop_floaters(raw, settings.floater_fraction)
    return KeptSurface(kept, len(raw.faces), pieces, dropped)


def surface(density_grid: torch.Tensor, threshold: float, radius: float) -> trimesh.Trimesh:
    """Marching cubes on a density grid spanning [-radius, radius]^3: upstream's mesh, uncoloured.

    Empty when the field never crosses the threshold.
    """
    unit_vertices, faces = marching_cubes(density_grid.detach().cpu().float().numpy(), threshold)
    if len(faces) == 0:
        return trimesh.Trimesh()
    vertices = unit_to_box(torch.from_numpy(unit_vertices), radius)
    return trimesh.Trimesh(vertices=vertices.numpy(), faces=faces)


def with_vertex_colors(mesh: trimesh.Trimesh, color_at: Callable[[np.ndarray], np.ndarray]) -> trimesh.Trimesh:
    """The mesh with each vertex coloured by the colour field there (as upstream's extract_mesh)."""
    colors = color_at(np.asarray(mesh.vertices, dtype=np.float32))
    return trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, vertex_colors=colors, process=False)
