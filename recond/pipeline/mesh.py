"""Mesh stage: density grid -> marching cubes -> the object alone, at a bounded size.

The grid itself is the device part's work (TripoSR.density_grid, recond/pipeline/runner.py);
this stage is the host part's first.

A marching-cubes surface at 256^3 has ~150k-1.7M faces and often small floating blobs. Every
later stage (unwrap, bake, files, turntable, viewer) costs in proportion to the faces, and the
blobs shrink the turntable's framing. So the stage drops pieces that are small next to the
main object, then simplifies to ``target_faces`` keeping the surface's topology (a closed
marching-cubes surface stays a printable solid, issue 15: recond.pipeline.topology), and only
then colours the vertices (when no texture is baked: the texture carries the colour). It records
what it published: solid or not, and bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import trimesh

from recond.config import JobSettings
from recond.errors import InputError
from recond.pipeline.topology import simplify, solid_facts
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

    def as_record(self) -> dict[str, int | float | bool]:
        return asdict(self)

    def warnings(self) -> list[str]:
        """What the job's warnings should say about the surface: nothing when it is a solid."""
        return [] if self.is_volume else [NOT_A_SOLID]


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
    kept = kept_surface(density_grid, radius, settings)
    report(0.6)
    simple = simplify(kept.mesh, settings.target_faces)
    report(0.8)
    colored = simple if settings.bake_texture else with_vertex_colors(simple, color_at)  # baked: unused
    report(0.9)
    solid = solid_facts(simple)
    facts = MeshFacts(kept.marching_cubes_faces, kept.pieces, kept.pieces_dropped, len(kept.mesh.faces),
                      len(colored.faces), solid.watertight, solid.is_volume, solid.bodies)
    return colored, facts


def kept_surface(density_grid: torch.Tensor, radius: float, settings: JobSettings) -> KeptSurface:
    """Marching cubes on the density grid and floaters dropped (z up, model space, uncoloured)."""
    raw = surface(density_grid, settings.mc_threshold, radius)
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


def drop_floaters(mesh: trimesh.Trimesh, min_fraction: float) -> tuple[trimesh.Trimesh, int, int]:
    """Drop pieces whose area is below ``min_fraction`` of the largest piece's.

    Returns the kept mesh, the number of pieces and the number dropped. The largest piece is
    always kept, so the object itself never goes. Pieces are edge-connected faces.
    """
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    areas = np.bincount(labels, weights=mesh.area_faces)
    keep = areas >= min_fraction * areas.max()
    dropped = int((~keep).sum())
    if dropped == 0:
        return mesh, len(areas), 0
    kept = mesh.copy()
    kept.update_faces(keep[labels])
    kept.remove_unreferenced_vertices()
    return kept, len(areas), dropped
