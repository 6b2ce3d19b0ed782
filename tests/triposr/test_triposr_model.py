"""TripoSR behaviour beyond upstream's numbers: the upstream bugs we do not copy, memory-bounded
chunking, compute dtypes, other model sizes, and picture preparation edge cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recond.pipeline.mesh import surface
from recond.triposr.model import TripoSR
from recond.triposr.preprocess import prepare_image
from recond.triposr.tiny import TINY_CONFIG, TINY_VIT, build_tiny_checkpoint, reference_picture
from helpers.volume_render import render, spherical_cameras


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> TripoSR:
    return TripoSR.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def scene_code(model: TripoSR) -> torch.Tensor:
    return model.encode([prepare_image(reference_picture())])[0]


def single_camera(azimuth_deg: float, elevation_deg: float, distance: float, fovy_deg: float,
                  height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One look-at camera built on its own in float64: z up, columns (right, up, back)."""
    azimuth, elevation = math.radians(azimuth_deg), math.radians(elevation_deg)
    position = distance * np.array([math.cos(elevation) * math.cos(azimuth),
                                    math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    focal = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    columns, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    camera = np.stack([(columns - width / 2) / focal, -(rows - height / 2) / focal,
                       -np.ones_like(columns)], axis=-1)
    directions = camera @ np.stack([right, up, -forward])
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    return np.broadcast_to(position, directions.shape), directions


def test_three_views_have_the_same_cameras_as_views_built_one_by_one() -> None:
    # Upstream crosses along the views axis when there are exactly 3 views (torch.cross without dim).
    rays_o, rays_d = spherical_cameras(3, 15.0, 1.9, 40.0, 8, 10)
    for view, azimuth in enumerate((0.0, 120.0, 240.0)):
        origin, direction = single_camera(azimuth, 15.0, 1.9, 40.0, 8, 10)
        np.testing.assert_allclose(rays_o[view].numpy(), origin, atol=1e-5)
        np.testing.assert_allclose(rays_d[view].numpy(), direction, atol=1e-5)
    assert len(np.unique(rays_d[0].reshape(-1, 3).numpy().round(4), axis=0)) == 80


def test_rays_that_miss_the_box_render_the_white_background(model: TripoSR, scene_code: torch.Tensor) -> None:
    # A 100 degree field of view from 1.9 away: the corner rays pass beside the box (upstream crashes).
    image = render(model, scene_code, 1, fovy_deg=100.0, height=24, width=24)[0]
    for corner in (image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]):
        assert torch.equal(corner, torch.ones(3))
    assert image[8:16, 8:16].min() < 0.9  # the object itself is visible in the middle


def test_field_that_never_reaches_the_threshold_gives_an_empty_mesh(model: TripoSR, scene_code: torch.Tensor) -> None:
    mesh = surface(model.density_grid(scene_code, 16), 1e12, model.radius)
    assert len(mesh.vertices) == 0 and len(mesh.faces) == 0


def test_tiny_model_surface_is_a_non_empty_mesh_in_the_box(model: TripoSR, scene_code: torch.Tensor) -> None:
    mesh = surface(model.density_grid(scene_code, 32), 25.0, model.radius)
    assert len(mesh.faces) > 500
    assert np.all(np.abs(mesh.vertices) <= model.radius + 1e-6)
    assert mesh.volume > 0  # faces wound outward, as upstream's


def test_density_grid_does_not_depend_on_the_chunk_size(model: TripoSR, scene_code: torch.Tensor) -> None:
    whole = model.density_grid(scene_code, 20, chunk_size=20 ** 3)
    chunked = model.density_grid(scene_code, 20, chunk_size=1000)
    np.testing.assert_allclose(chunked.numpy(), whole.numpy(), rtol=1e-5)
    axis = torch.linspace(-model.radius, model.radius, 20)
    corner = model.query(scene_code, torch.stack([axis[0], axis[-1], axis[3]])[None])["density_act"]
    assert torch.allclose(whole[0, -1, 3], corner[0, 0], rtol=1e-5)  # indexed [ix, iy, iz]


def test_encode_reports_progress_after_every_transformer_block(model: TripoSR) -> None:
    fractions: list[float] = []
    model.encode([prepare_image(reference_picture())], progress=fractions.append)
    blocks = len(model.image_tokenizer.model.encoder.layer) + len(model.backbone.transformer_blocks)
    assert len(fractions) == blocks
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_heavy_calls_run_without_autograd(model: TripoSR, scene_code: torch.Tensor) -> None:
    out = model.query(scene_code, torch.zeros(4, 3))
    assert not out["density"].requires_grad
    assert not model.encode([prepare_image(reference_picture())]).requires_grad


def test_bfloat16_compute_stays_close_to_float32(tiny_model_dir: Path, model: TripoSR, scene_code: torch.Tensor) -> None:
    half = TripoSR.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    codes = half.encode([prepare_image(reference_picture())])
    assert codes.dtype == torch.float32
    assert (codes[0] - scene_code).abs().max() < 0.05 * scene_code.abs().max()


def test_other_model_sizes_and_settings_work_end_to_end(tmp_path: Path) -> None:
    config = {**TINY_CONFIG, "cond_image_size": 48,
              "tokenizer": {"plane_size": 4, "num_channels": 64},
              "backbone": {**TINY_CONFIG["backbone"], "num_attention_heads": 4, "attention_head_dim": 8,
                           "num_layers": 2, "cross_attention_dim": 24},
              "post_processor": {"in_channels": 64, "out_channels": 5},
              "decoder": {"in_channels": 15, "n_neurons": 12, "n_hidden_layers": 4, "activation": "relu"},
              "renderer": {**TINY_CONFIG["renderer"], "radius": 0.6, "num_samples_per_ray": 7}}
    vit = {**TINY_VIT, "hidden_size": 24, "num_attention_heads": 3, "intermediate_size": 40,
           "num_hidden_layers": 3, "image_size": 48, "patch_size": 8}
    model = TripoSR.from_pretrained(build_tiny_checkpoint(tmp_path / "other", config, vit, seed=7))
    codes = model.encode(torch.rand(2, 40, 56, 3))
    assert codes.shape == (2, 3, 5, 8, 8)
    assert render(model, codes[1], 2, height=6, width=9).shape == (2, 6, 9, 3)
    mesh = surface(model.density_grid(codes[0], 24), 25.0, model.radius)
    assert len(mesh.faces) > 0 and np.all(np.abs(mesh.vertices) <= 0.6 + 1e-6)


def test_picture_without_alpha_is_treated_as_opaque() -> None:
    opaque = Image.new("RGB", (40, 30), (10, 200, 30))
    prepared = prepare_image(opaque, foreground_ratio=0.5)
    # crop drops the last row and column (as upstream), then pads 39x29 to square 39, then to 78
    assert prepared.shape == (78, 78, 3)
    assert np.allclose(prepared[39, 39], np.array([10, 200, 30]) / 255, atol=1 / 255)
    assert np.allclose(prepared[0, 0], 127 / 255)


def test_fully_transparent_picture_is_refused_with_a_sentence() -> None:
    with pytest.raises(ValueError, match="no visible object"):
        prepare_image(Image.new("RGBA", (16, 16), (255, 0, 0, 0)))
