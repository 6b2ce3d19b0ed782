"""The mesh stage: floaters dropped (never the object), faces simplified to the target, and the
stage on a real model records what it did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from recond.triposr.tiny import reference_picture
from recond.config import load_settings
from recond.pipeline.mesh import build_mesh, drop_floaters, simplify
from recond.pipeline.reconstruct import color_query
from recond.triposr.model import TripoSR
from recond.triposr.preprocess import prepare_image


def object_with_specks() -> tuple[trimesh.Trimesh, trimesh.Trimesh]:
    """A unit sphere, and the same with two tiny spheres floating beside it."""
    body = trimesh.creation.icosphere(subdivisions=4)
    specks = [trimesh.creation.icosphere(subdivisions=1, radius=0.05).apply_translation(offset)
              for offset in ([2.0, 0, 0], [0, -1.6, 0.4])]
    return body, trimesh.util.concatenate([body, *specks])


def test_small_floating_pieces_are_dropped_and_the_object_kept() -> None:
    body, with_specks = object_with_specks()
    kept, pieces, dropped = drop_floaters(with_specks, 0.02)
    assert (pieces, dropped) == (3, 2)
    assert len(kept.faces) == len(body.faces)
    np.testing.assert_allclose(kept.bounds, body.bounds)
    assert len(kept.vertices) == len(body.vertices)  # the specks' vertices went too


def test_floater_fraction_zero_keeps_every_piece() -> None:
    _, with_specks = object_with_specks()
    kept, pieces, dropped = drop_floaters(with_specks, 0.0)
    assert (pieces, dropped) == (3, 0)
    assert len(kept.faces) == len(with_specks.faces)


def test_the_largest_piece_is_never_dropped_and_large_parts_stay() -> None:
    body, _ = object_with_specks()
    kept, _, dropped = drop_floaters(body, 0.99)
    assert dropped == 0 and len(kept.faces) == len(body.faces)
    # Two parts of similar size (a cup and its detached handle, say) are both the object.
    handle = trimesh.creation.icosphere(subdivisions=4, radius=0.6).apply_translation([2.5, 0, 0])
    kept, pieces, dropped = drop_floaters(trimesh.util.concatenate([body, handle]), 0.02)
    assert (pieces, dropped) == (2, 0)


def test_simplification_reaches_the_target_and_keeps_the_shape() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=5)  # 20,480 faces
    simple = simplify(sphere, 2000)
    assert 1800 <= len(simple.faces) <= 2000
    assert simple.is_watertight
    assert simple.volume == pytest.approx(sphere.volume, rel=0.02)
    assert np.abs(np.linalg.norm(simple.vertices, axis=1) - 1.0).max() < 0.02


def test_target_zero_or_above_the_face_count_keeps_every_face() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    assert simplify(sphere, 0) is sphere
    assert simplify(sphere, len(sphere.faces)) is sphere


def test_stage_on_the_tiny_model_records_counts_before_and_after(tiny_model_dir: Path) -> None:
    model = TripoSR.from_pretrained(tiny_model_dir)
    scene_code = model.encode([prepare_image(reference_picture())])[0]
    settings = load_settings(model=str(tiny_model_dir), device="cpu", mc_resolution=48, target_faces=1000)
    fractions: list[float] = []
    grid = model.density_grid(scene_code, settings.mc_resolution, level=settings.mc_threshold)
    color_at = color_query(model, scene_code, settings.chunk_size)
    mesh, facts = build_mesh(grid, color_at, model.radius, settings, fractions.append)
    assert facts.marching_cubes_faces > 2000
    assert facts.marching_cubes_faces >= facts.faces_after_floaters > facts.faces
    assert 900 <= facts.faces == len(mesh.faces) <= 1000
    assert facts.pieces >= 1 + facts.pieces_dropped
    assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    assert fractions == sorted(fractions) and len(fractions) >= 3
