"""How a mesh's surface looks: seam-free smooth normals and where its colour comes from.

The turntable and the web viewer must shade the same mesh the same way, so both read the
mesh's appearance through these two functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from PIL import Image

UNTEXTURED_GREY = (0.7, 0.7, 0.7)


@dataclass
class SurfaceColor:
    """Either a texture with per-vertex UVs, or per-vertex RGB colours in [0, 1]."""

    uv: np.ndarray | None = None  # [V, 2] float32, v up
    texture: Image.Image | None = None  # RGB, row 0 at the top
    vertex_colors: np.ndarray | None = None  # [V, 3] float32


def surface_color(mesh: trimesh.Trimesh) -> SurfaceColor:
    """The mesh's texture if it has one, else its vertex/face colours, else a neutral grey."""
    visual = mesh.visual
    if visual.kind == "texture" and visual.uv is not None:
        material = visual.material
        # SimpleMaterial keeps the picture in .image, PBRMaterial (e.g. from a GLB) in .baseColorTexture.
        image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
        if image is not None:
            return SurfaceColor(uv=np.asarray(visual.uv, dtype=np.float32), texture=image.convert("RGB"))
    if visual.kind in ("vertex", "face"):
        return SurfaceColor(vertex_colors=np.asarray(visual.vertex_colors[:, :3], dtype=np.float32) / 255.0)
    grey = np.asarray(UNTEXTURED_GREY, dtype=np.float32)
    return SurfaceColor(vertex_colors=np.tile(grey, (len(mesh.vertices), 1)))


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smooth unit normals that ignore UV seams: split copies of one point share one normal."""
    _, point_id = np.unique(vertices, axis=0, return_inverse=True)
    point_id = point_id.reshape(-1)
    corners = vertices[faces]
    # The cross product's length is twice the face area, so large faces weigh more.
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    point_normals = np.zeros((len(vertices), 3), dtype=np.float64)
    for corner in range(3):
        np.add.at(point_normals, point_id[faces[:, corner]], face_normals)
    normals = point_normals[point_id]
    lengths = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.where(lengths > 0, lengths, 1.0)).astype(np.float32)


def bounding_sphere(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre of the bounding box and the radius around it that holds every vertex."""
    if len(vertices) == 0:
        return np.zeros(3, dtype=np.float32), 1.0
    center = (vertices.min(0) + vertices.max(0)) / 2
    radius = float(np.linalg.norm(vertices - center, axis=1).max())
    return center.astype(np.float32), max(radius, 1e-6)
