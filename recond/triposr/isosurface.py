"""The dense query grid of the density field and its level-set surface (PyMCubes).

Grid layout and vertex convention follow upstream's MarchingCubeHelper (tsr/models/isosurface.py):
``linspace(0, 1, R)`` per axis, 'ij' indexing, vertices as (dim0, dim1, dim2) index / (R - 1).
"""

from __future__ import annotations

from collections.abc import Iterator

import mcubes
import numpy as np
import torch


def grid_axis(resolution: int, radius: float) -> torch.Tensor:
    """Coordinates of the grid planes along one axis, in [-radius, radius] (ends included)."""
    unit = torch.linspace(0, 1, resolution)
    return unit_to_box(unit, radius)


def unit_to_box(unit: torch.Tensor, radius: float) -> torch.Tensor:
    # upstream scale_tensor from (0, 1) to (-r, r), same order of operations
    return (unit - 0) / (1 - 0) * (radius - (-radius)) + (-radius)


def grid_point_chunks(resolution: int, radius: float, chunk_size: int) -> Iterator[torch.Tensor]:
    """Grid points [n, 3] in x-major order, a chunk at a time (the whole grid never exists at once)."""
    axis = grid_axis(resolution, radius)
    total = resolution ** 3
    for start in range(0, total, chunk_size):
        index = torch.arange(start, min(start + chunk_size, total))
        yield torch.stack([axis[index // resolution ** 2], axis[(index // resolution) % resolution],
                           axis[index % resolution]], dim=-1)


def marching_cubes(density_grid: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Level set density == threshold -> unit-cube vertices [V, 3] float32 and faces [F, 3] int64."""
    level = (density_grid - np.float32(threshold)).astype(np.float32)
    vertices, faces = mcubes.marching_cubes(level, 0.0)
    unit = vertices.astype(np.float32) / np.float32(density_grid.shape[0] - 1.0)
    return unit, faces.astype(np.int64)
