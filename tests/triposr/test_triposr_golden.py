"""The port against upstream TripoSR's own outputs (../shared/reference/golden_*).

Each golden folder is a tiny random-weight checkpoint plus what upstream computed from it
(README.md there). Every folder found is checked, so a held-out set only needs to be dropped in.
Call parameters come from the set's meta.json, falling back to golden_a's documented values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial import cKDTree

from helpers.paths import SHARED
from recond.pipeline.mesh import surface, with_vertex_colors
from recond.pipeline.reconstruct import color_query
from recond.triposr.model import TripoSR
from recond.triposr.preprocess import prepare_image
from recond.triposr.isosurface import grid_point_chunks, marching_cubes
from recond.triposr.preprocess import frame_foreground, model_input
from helpers.volume_render import render, spherical_cameras

GOLDEN_DIRS = sorted(path.parent for path in (SHARED / "reference").glob("golden_*/expected.npz"))
TOLERANCE = 1e-4
DEFAULT_RENDERS = [
    {"name": "render_images", "n_views": 2, "elevation_deg": 0.0, "camera_distance": 1.9,
     "fovy_deg": 40.0, "height": 32, "width": 32},
    {"name": "render_images_b", "n_views": 5, "elevation_deg": 20.0, "camera_distance": 2.1,
     "fovy_deg": 35.0, "height": 24, "width": 32},
]

pytestmark = pytest.mark.skipif(not GOLDEN_DIRS, reason=f"no golden sets under {SHARED / 'reference'} "
                                                        "(../shared beside the repository is absent)")


@dataclass
class GoldenRun:
    folder: Path
    meta: dict[str, Any]
    expected: dict[str, np.ndarray]
    model: TripoSR
    scene_code: torch.Tensor

    @property
    def resolution(self) -> int:
        return int(self.meta.get("extract_mesh", {}).get("resolution", 32))

    @property
    def threshold(self) -> float:
        return float(self.meta.get("extract_mesh", {}).get("threshold", 25.0))


@pytest.fixture(scope="module", params=GOLDEN_DIRS, ids=[path.name for path in GOLDEN_DIRS])
def golden(request: pytest.FixtureRequest) -> GoldenRun:
    folder: Path = request.param
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    with np.load(folder / "expected.npz") as arrays:
        expected = dict(arrays)
    model = TripoSR.from_pretrained(folder)
    ratio = meta.get("preprocessing", {}).get("foreground_ratio", 0.85)
    with Image.open(folder / "input.png") as picture:
        scene_code = model.encode([prepare_image(picture, ratio)])[0]
    return GoldenRun(folder, meta, expected, model, scene_code)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Error relative to max(1, |expected|): absolute for ordinary values, relative for exp-scaled ones."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float((np.abs(actual - expected) / np.maximum(1.0, np.abs(expected))).max())


def max_abs_error(actual: np.ndarray, expected: np.ndarray) -> float:
    assert np.shape(actual) == np.shape(expected)
    return float(np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64)).max())


def test_prepared_picture_equals_upstream_framing_and_grey_composite(golden: GoldenRun) -> None:
    ratio = golden.meta.get("preprocessing", {}).get("foreground_ratio", 0.85)
    with Image.open(golden.folder / "input.png") as picture:
        framed = frame_foreground(np.asarray(picture.convert("RGBA")), ratio)
        prepared = prepare_image(picture, ratio)
    np.testing.assert_array_equal(framed, golden.expected["rgba_after_resize_foreground"])
    np.testing.assert_array_equal(np.round(prepared * 255).astype(np.uint8), golden.expected["cond_rgb_u8"])
    np.testing.assert_array_equal(prepared, golden.expected["cond_rgb"])


def test_model_input_resize_matches_upstream(golden: GoldenRun) -> None:
    pixels = model_input([golden.expected["cond_rgb"]], golden.model.config.cond_image_size)
    assert max_abs_error(pixels[0].permute(1, 2, 0).numpy(), golden.expected["model_input_rgb"]) <= TOLERANCE


def test_image_and_triplane_tokens_match_upstream(golden: GoldenRun) -> None:
    model = golden.model
    pixels = torch.from_numpy(golden.expected["model_input_rgb"]).permute(2, 0, 1)[None]
    with torch.inference_mode():
        image_tokens = model.image_tokenizer(pixels)
        triplane_tokens = model.backbone(model.tokenizer(1), image_tokens.transpose(1, 2))
    assert max_abs_error(image_tokens[0].numpy(), golden.expected["image_tokens"]) <= TOLERANCE
    assert max_abs_error(triplane_tokens[0].numpy(), golden.expected["triplane_tokens"]) <= TOLERANCE


def test_scene_codes_from_the_picture_match_upstream(golden: GoldenRun) -> None:
    assert max_abs_error(golden.scene_code.numpy(), golden.expected["scene_codes"]) <= TOLERANCE


def test_point_queries_match_upstream(golden: GoldenRun) -> None:
    expected = golden.expected
    out = golden.model.query(golden.scene_code, torch.from_numpy(expected["query_points"]), chunk_size=777)
    assert max_abs_error(out["density"][:, 0].numpy(), expected["query_density"]) <= TOLERANCE
    assert max_abs_error(out["features"].numpy(), expected["query_features"]) <= TOLERANCE
    assert max_abs_error(out["color"].numpy(), expected["query_color"]) <= TOLERANCE
    # exp(density) reaches ~1e4, where float32 spacing alone is ~1e-3: compare relatively there
    assert relative_error(out["density_act"][:, 0].numpy(), expected["query_density_act"]) <= TOLERANCE


def test_density_grid_matches_upstream(golden: GoldenRun) -> None:
    grid = golden.model.density_grid(golden.scene_code, golden.resolution, chunk_size=5000)
    assert relative_error(grid.numpy(), golden.expected["density_grid"]) <= TOLERANCE
    points = next(grid_point_chunks(golden.resolution, golden.model.radius, golden.resolution ** 3))
    raw = golden.model.query(golden.scene_code, points)["density"].reshape(grid.shape)
    assert max_abs_error(raw.numpy(), golden.expected["density_grid_raw"]) <= TOLERANCE


def test_marching_cubes_on_the_golden_grid_is_identical_to_upstream(golden: GoldenRun) -> None:
    expected = golden.expected
    unit_vertices, faces = marching_cubes(expected["density_grid"], golden.threshold)
    np.testing.assert_array_equal(unit_vertices, expected["mc_vertices_unit"])
    np.testing.assert_array_equal(faces, expected["mc_faces"])
    scene_code = torch.from_numpy(expected["scene_codes"])
    # The mesh stage's raw surface, before floaters are dropped or faces simplified.
    mesh = with_vertex_colors(surface(torch.from_numpy(expected["density_grid"]), golden.threshold,
                                      golden.model.radius), color_query(golden.model, scene_code, 65536))
    np.testing.assert_array_equal(mesh.vertices, expected["mesh_vertices"])
    np.testing.assert_array_equal(mesh.faces, expected["mesh_faces"])
    colours = golden.model.query(scene_code, torch.from_numpy(expected["mesh_vertices"]))["color"]
    assert max_abs_error(colours.numpy(), expected["mesh_vertex_colors"]) <= TOLERANCE
    rgba_difference = np.abs(mesh.visual.vertex_colors.astype(int) - expected["mesh_vertex_colors_rgba8"])
    assert rgba_difference.max() <= 1  # rounding of colours within 1e-6 of a half-step


def test_extracted_mesh_matches_upstream_order_independently(golden: GoldenRun) -> None:
    expected = golden.expected
    grid = golden.model.density_grid(golden.scene_code, golden.resolution)
    # Before floater removal and simplification, which the pipeline adds after upstream's mesh.
    mesh = with_vertex_colors(surface(grid, golden.threshold, golden.model.radius),
                              color_query(golden.model, golden.scene_code, 65536))
    assert len(mesh.faces) == len(expected["mesh_faces"])
    ours_to_theirs, nearest = cKDTree(expected["mesh_vertices"]).query(mesh.vertices)
    theirs_to_ours, _ = cKDTree(mesh.vertices).query(expected["mesh_vertices"])
    assert max(ours_to_theirs.max(), theirs_to_ours.max()) <= TOLERANCE
    upstream_area = float(np.linalg.norm(np.cross(*np.diff(expected["mesh_vertices"][expected["mesh_faces"]],
                                                           axis=1).transpose(1, 0, 2)), axis=-1).sum() / 2)
    assert abs(mesh.area - upstream_area) <= TOLERANCE * upstream_area
    colour_error = max_abs_error(mesh.visual.vertex_colors[:, :3].astype(float),
                                 expected["mesh_vertex_colors_rgba8"][nearest, :3].astype(float))
    assert colour_error <= 1


def render_settings(golden: GoldenRun) -> list[tuple[str, dict[str, Any]]]:
    renders = golden.meta.get("run", {}).get("renders", DEFAULT_RENDERS)
    keys = ("n_views", "elevation_deg", "camera_distance", "fovy_deg", "height", "width")
    return [(render["name"], {key: render[key] for key in keys}) for render in renders]


def test_camera_rays_match_upstream(golden: GoldenRun) -> None:
    for name, view in render_settings(golden):
        rays_o, rays_d = spherical_cameras(**view)
        assert max_abs_error(rays_o.numpy(), golden.expected[f"{name}_rays_o"]) <= TOLERANCE
        assert max_abs_error(rays_d.numpy(), golden.expected[f"{name}_rays_d"]) <= TOLERANCE


def test_renders_match_upstream(golden: GoldenRun) -> None:
    for name, view in render_settings(golden):
        images = render(golden.model, golden.scene_code, chunk_size=3000, **view)
        assert max_abs_error(images.numpy(), golden.expected[name]) <= TOLERANCE
        truncated = (images.numpy() * 255).astype(np.uint8).astype(int)
        assert np.abs(truncated - golden.expected[f"{name}_u8"]).max() <= 1
