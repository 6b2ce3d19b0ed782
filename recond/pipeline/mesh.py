"""Mesh stage: density grid -> marching cubes -> the object alone, at a bounded size.

The grid itself is the device part's work (TripoSR.density_grid, recond/pipeline/runner.py);
this stage is the host part's first.

A marching-cubes surface at 256^3 has ~150k-1.7M faces and often small floating blobs. Every
later stage (unwrap, bake, files, turntable, viewer) costs in proportion to the faces, and the
blobs shrink the turntable's framing. So the stage drops pieces that are small next to the
main object, then simplifies to ``target_faces`` by quadric decimation (fast-simplification,
through trimesh), and only then colours the vertices, since the texture carries the detail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import trimesh

from recond.config import JobSettings
from recond.errors import InputError
from recond.triposr.isosurface import marching_cubes, unit_to_box


@dataclass(frozen=True)
class MeshFacts:
    """How the mesh came to be, for job.json."""

    marching_cubes_faces: int
    pieces: int
    pieces_dropped: int
    faces_after_floaters: int
    faces: int

    def as_record(self) -> dict[str, int]:
        return asdict(self)


def build_mesh(density_grid: torch.Tensor, color_at: Callable[[np.ndarray], np.ndarray], radius: float,
               settings: JobSettings, report: Callable[[float], None]) -> tuple[trimesh.Trimesh, MeshFacts]:
    """The object's coloured surface (z up, model space) from the density grid the device part
    made; an empty surface is the picture's fault. ``color_at`` is the model's colour field."""
    raw = surface(density_grid, settings.mc_threshold, radius)
    if len(raw.faces) == 0:
        raise InputError(
            "the model found no object in this picture (its density never reaches the surface "
            f"threshold {settings.mc_threshold}); try a clearer photo of a single object"
        )
    report(0.6)
    kept, pieces, dropped = drop_floaters(raw, settings.floater_fraction)
    report(0.7)
    simple = simplify(kept, settings.target_faces)
    report(0.9)
    colored = with_vertex_colors(simple, color_at)
    facts = MeshFacts(len(raw.faces), pieces, dropped, len(kept.faces), len(colored.faces))
    return colored, facts


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


def simplify(mesh: trimesh.Trimesh, target_faces: int) -> trimesh.Trimesh:
    """Quadric decimation to about ``target_faces`` faces; 0, or a mesh already that small, is kept."""
    if target_faces == 0 or len(mesh.faces) <= target_faces:
        return mesh
    return mesh.simplify_quadric_decimation(face_count=target_faces)
