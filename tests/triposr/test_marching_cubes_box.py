"""Marching cubes on the box around the object only (issue 23: a tenth of bench_chair's 256^3
cells) gives exactly the surface of the whole grid: the same faces in the same order, the same
vertices. Checked against PyMCubes run on the whole grid."""

from __future__ import annotations

import mcubes
import numpy as np
import pytest

from recond.triposr.isosurface import marching_cubes

LEVEL = 25.0


def whole_grid_surface(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vertices, faces = mcubes.marching_cubes((grid - np.float32(LEVEL)).astype(np.float32), 0.0)
    return vertices.astype(np.float32) / np.float32(grid.shape[0] - 1), faces


def blobs(resolution: int, centres: list[tuple[float, float, float]], seed: int) -> np.ndarray:
    """Density peaks of 50 at ``centres`` (unit cube) with noise, 0 far away."""
    axis = np.linspace(0.0, 1.0, resolution, dtype=np.float32)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    grid = np.zeros_like(x)
    for cx, cy, cz in centres:
        grid += 50 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / 0.01)
    return grid + np.random.default_rng(seed).random(grid.shape, dtype=np.float32)


@pytest.mark.parametrize("centres", [[(0.5, 0.5, 0.5)], [(0.3, 0.6, 0.4), (0.62, 0.35, 0.58)],
                                     [(0.02, 0.5, 0.98)]])  # one touching the grid's faces
def test_the_box_around_the_object_gives_the_whole_grids_surface(centres: list) -> None:
    grid = blobs(72, centres, seed=len(centres))
    vertices, faces = marching_cubes(grid, LEVEL)
    expected_vertices, expected_faces = whole_grid_surface(grid)
    assert len(faces) > 100
    assert np.array_equal(faces, expected_faces) and np.array_equal(vertices, expected_vertices)


def test_a_grid_below_the_level_everywhere_has_no_surface() -> None:
    vertices, faces = marching_cubes(np.full((16, 16, 16), LEVEL - 1, dtype=np.float32), LEVEL)
    assert vertices.shape == (0, 3) and faces.shape == (0, 3)
