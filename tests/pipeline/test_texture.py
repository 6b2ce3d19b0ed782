"""Texture bake: xatlas unwrap + colour field baked into texels, dilated past chart edges."""

import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from recond.pipeline.texture import bake_texture


def _color_field(points: np.ndarray) -> np.ndarray:
    """A smooth, never-black colour that differs everywhere on the unit sphere."""
    points = np.asarray(points, dtype=np.float32)
    return (0.25 + 0.7 * (points * 0.5 + 0.5)).clip(0, 1).astype(np.float32)


def _sample_bilinear(image, uv: np.ndarray) -> np.ndarray:
    """What a GPU's bilinear texture lookup returns at these UVs."""
    texture = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    grid = torch.from_numpy(np.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], -1)).float()[None, None]
    return F.grid_sample(texture, grid, align_corners=False)[0, :, 0].T.numpy()


def _bake(subdivisions=3, resolution=256, progress=None):
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    baked, _ = bake_texture(sphere, _color_field, resolution, progress)
    return sphere, baked


def test_texture_at_vertex_uvs_matches_the_colour_field():
    _, baked = _bake()
    sampled = _sample_bilinear(baked.visual.material.image, baked.visual.uv)
    error = np.abs(sampled - _color_field(baked.vertices))
    assert error.max() < 0.04
    assert error.mean() < 0.01


def test_points_along_chart_borders_sample_no_seam_colours():
    """Bilinear lookups just inside every triangle edge (where charts end) stay on colour."""
    _, baked = _bake()
    rng = np.random.default_rng(0)
    faces = np.repeat(baked.faces, 4, axis=0)
    # Barycentrics with one weight ~0: points hugging an edge of each triangle.
    weights = rng.dirichlet([1, 1, 1], size=len(faces)).astype(np.float32)
    weights[np.arange(len(faces)), rng.integers(0, 3, len(faces))] = 0.002
    weights /= weights.sum(1, keepdims=True)
    uv = np.einsum("fk,fkc->fc", weights, baked.visual.uv[faces])
    points = np.einsum("fk,fkc->fc", weights, baked.vertices[faces])
    error = np.abs(_sample_bilinear(baked.visual.material.image, uv) - _color_field(points))
    assert np.quantile(error.max(1), 0.999) < 0.06


def test_atlas_has_no_unfilled_texels():
    _, baked = _bake()
    image = np.asarray(baked.visual.material.image)
    assert image.shape == (256, 256, 3)
    # The field is never darker than 0.25, so any dark texel was left unbaked.
    assert image.min() >= 0.2 * 255


def test_geometry_is_unchanged_and_progress_reaches_one():
    fractions = []
    sphere, baked = _bake(progress=fractions.append)
    assert isinstance(baked.visual, trimesh.visual.TextureVisuals)
    assert baked.visual.material.image.mode == "RGB"
    assert len(baked.vertices) >= len(sphere.vertices)  # split at seams, never merged
    assert np.isclose(baked.area, sphere.area, rtol=1e-5)
    assert np.isclose(baked.volume, sphere.volume, rtol=1e-5)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)


def test_atlas_facts_count_charts_and_covered_texels():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    baked, facts = bake_texture(sphere, _color_field, 256)
    # Each chart is a connected patch of UV space: at least one, at most one per face.
    assert 1 <= facts.charts <= len(sphere.faces)
    assert 0.2 < facts.atlas_use < 1.0
    assert facts.as_record() == {"charts": facts.charts, "atlas_use": facts.atlas_use}
