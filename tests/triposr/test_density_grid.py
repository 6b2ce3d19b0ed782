"""The coarse-to-fine density grid against the full grid, and progress while a grid is computed.

Tolerance (recond/triposr/isosurface.py): every marching-cubes vertex of the refined grid is a
vertex of the full grid's surface, bit for bit, and the full surface's vertices are all there
except on specks that lie wholly between coarse samples far from the level; on bench_chair
those are floaters the mesh stage drops, so the kept object is identical (Hausdorff 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial import cKDTree

from recond.triposr.tiny import reference_picture
from recond.pipeline.mesh import drop_floaters, surface
from recond.triposr.model import TripoSR
from recond.triposr.preprocess import prepare_image
from recond.triposr.isosurface import full_density_grid, refined_density_grid

LEVEL = 25.0


def same_vertex_sets(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(np.unique(a, axis=0), np.unique(b, axis=0))


def sphere_with_thin_rod(points: torch.Tensor) -> torch.Tensor:
    """density == LEVEL on a sphere with a rod sticking out, far thinner than a coarse block.

    On the 64^3 grid over [-0.87, 0.87] coarse samples sit 0.11 apart; the rod's axis runs
    midway between two rows of them, so no coarse sample near the rod's tip sees it.
    """
    sphere = points.norm(dim=-1) - 0.35
    to_axis = (points[:, 1:] - 0.069).norm(dim=-1)
    beyond_ends = torch.clamp(torch.maximum(0.2 - points[:, 0], points[:, 0] - 0.8), min=0)
    rod = torch.sqrt(torch.clamp(to_axis - 0.015, min=0) ** 2 + beyond_ends ** 2) + \
        torch.clamp(to_axis - 0.015, max=0)
    signed_distance = torch.minimum(sphere, rod)
    return LEVEL * torch.exp(-80.0 * signed_distance)


def test_surface_that_leaves_the_coarse_blocks_is_followed_to_the_full_grids_vertices() -> None:
    full = full_density_grid(sphere_with_thin_rod, 64, 0.87, 4096)
    refined = refined_density_grid(sphere_with_thin_rod, 64, 0.87, LEVEL, 4096)
    expected, ours = surface(full, LEVEL, 0.87), surface(refined, LEVEL, 0.87)
    assert expected.vertices[:, 0].max() > 0.75  # the rod's tip is part of the full surface
    assert same_vertex_sets(ours.vertices, expected.vertices)
    assert len(ours.faces) == len(expected.faces)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[TripoSR, torch.Tensor]:
    model = TripoSR.from_pretrained(tiny_model_dir)
    return model, model.encode([prepare_image(reference_picture())])[0]


def test_tiny_model_refined_grid_gives_the_full_grids_surface(tiny: tuple[TripoSR, torch.Tensor]) -> None:
    model, scene_code = tiny
    full = model.density_grid(scene_code, 48)
    refined = model.density_grid(scene_code, 48, level=LEVEL)
    expected, ours = surface(full, LEVEL, model.radius), surface(refined, LEVEL, model.radius)
    assert same_vertex_sets(ours.vertices, expected.vertices)
    assert np.array_equal(full.numpy() > LEVEL, refined.numpy() > LEVEL)


def test_bench_chair_refined_surface_is_the_full_one_up_to_dropped_specks(shared_dir: Path) -> None:
    model = TripoSR.from_pretrained(shared_dir / "reference" / "bench_chair")
    with Image.open(shared_dir / "examples" / "chair.png") as picture:
        scene_code = model.encode([prepare_image(picture)])[0]
    full = surface(model.density_grid(scene_code, 64), LEVEL, model.radius)
    refined = surface(model.density_grid(scene_code, 64, level=LEVEL), LEVEL, model.radius)
    ours_to_full, _ = cKDTree(full.vertices).query(refined.vertices)
    assert ours_to_full.max() == 0.0
    assert len(refined.faces) >= 0.99 * len(full.faces)
    kept_full, kept_ours = drop_floaters(full, 0.02)[0], drop_floaters(refined, 0.02)[0]
    assert same_vertex_sets(kept_ours.vertices, kept_full.vertices)  # Hausdorff distance 0


def test_grid_reports_progress_while_it_is_computed(tiny: tuple[TripoSR, torch.Tensor]) -> None:
    model, scene_code = tiny
    for level in (None, LEVEL):
        fractions: list[float] = []
        model.density_grid(scene_code, 40, chunk_size=1024, level=level, progress=fractions.append)
        assert len(fractions) >= 8  # one report per chunk of points
        assert fractions == sorted(fractions) and fractions[-1] == 1.0


def white_noise(points: torch.Tensor) -> torch.Tensor:
    """A field with no surface to speak of: density around LEVEL at random, point by point (a
    hash of the coordinates, so a point gets the same value however the grid is chunked)."""
    key = (points * 1000).round().to(torch.int64) @ torch.tensor([73856093, 19349663, 83492791])
    return LEVEL * torch.exp(((key % 1000).float() / 1000 - 0.5) * 4)


def test_a_noise_field_is_sampled_coarser_instead_of_evaluating_every_point() -> None:
    evaluated = []

    def counted(points: torch.Tensor) -> torch.Tensor:
        evaluated.append(len(points))
        return white_noise(points)

    fractions: list[float] = []
    grid = refined_density_grid(counted, 128, 0.87, LEVEL, 4096, fractions.append)
    assert grid.shape == (32, 32, 32)  # 128 / REFINE_STRIDE
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # progress on to the end, never back
    assert sum(evaluated) <= 2 * 33 ** 3  # the coarse samples and the coarser grid: no fine pass
    assert np.array_equal(grid.numpy(), full_density_grid(white_noise, 32, 0.87, 4096).numpy())
    unbounded = refined_density_grid(white_noise, 128, 0.87, LEVEL, 4096, max_refined_share=None)
    assert unbounded.shape == (128, 128, 128)


def test_a_clean_surface_is_refined_well_within_the_noise_bound() -> None:
    evaluated = []

    def counted(points: torch.Tensor) -> torch.Tensor:
        evaluated.append(len(points))
        return sphere_with_thin_rod(points)

    assert refined_density_grid(counted, 128, 0.87, LEVEL, 4096).shape == (128, 128, 128)
    assert sum(evaluated) < 0.25 * 128 ** 3  # well within the bound: refined as before
