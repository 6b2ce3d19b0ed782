"""The mesh stage: floaters dropped (never the object), faces simplified to the target, and the
stage on a real model records what it did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pymeshlab
import pytest
import trimesh

from helpers.paths import REPO
from recond.config import load_settings
from recond.pipeline.mesh import NOT_A_SOLID, MeshFacts, build_mesh, drop_floaters
from recond.pipeline.reconstruct import color_query
from recond.pipeline.topology import (
    SolidFacts,
    hausdorff_to_diagonal,
    simplify,
    solid_facts,
)
from recond.triposr.model import TripoSR
from recond.triposr.preprocess import prepare_image
from recond.triposr.tiny import reference_picture


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
    assert solid_facts(simple) == SolidFacts(watertight=True, is_volume=True, bodies=1)
    assert simple.volume == pytest.approx(sphere.volume, rel=0.02)
    assert np.abs(np.linalg.norm(simple.vertices, axis=1) - 1.0).max() < 0.02
    # The farthest vertex is within 0.02 of the unit sphere; the diagonal is 2 sqrt(3).
    assert 0 < hausdorff_to_diagonal(sphere, simple) < 0.02 / (2 * np.sqrt(3))


def test_an_open_surface_is_reported_as_no_solid() -> None:
    cup = trimesh.creation.icosphere(subdivisions=4)
    cup.update_faces(cup.triangles_center[:, 2] < 0.5)  # the top cut off
    facts = solid_facts(simplify(cup, 500))
    assert not facts.watertight and not facts.is_volume
    record = MeshFacts(len(cup.faces), 1, 0, len(cup.faces), 500, facts.watertight, facts.is_volume,
                       facts.bodies)
    assert record.warnings() == [NOT_A_SOLID]
    assert MeshFacts(10, 1, 0, 10, 10, True, True, 1).warnings() == []


def test_simplification_is_the_same_whatever_pymeshlab_was_last_asked() -> None:
    """pymeshlab carries a filter's parameters over from its previous call in the process."""
    sphere = trimesh.creation.icosphere(subdivisions=4)
    first = simplify(sphere, 500)
    other = pymeshlab.MeshSet()
    other.add_mesh(pymeshlab.Mesh(sphere.vertices, sphere.faces))
    other.meshing_decimation_quadric_edge_collapse(targetfacenum=400, planarquadric=True, preservenormal=True,
                                                   preservetopology=False, qualitythr=0.9)
    assert np.array_equal(simplify(sphere, 500).vertices, first.vertices)


def test_target_zero_or_above_the_face_count_keeps_every_face() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    assert simplify(sphere, 0) is sphere
    assert simplify(sphere, len(sphere.faces)) is sphere


def test_stage_on_the_tiny_model_records_counts_before_and_after(tiny_model_dir: Path) -> None:
    model = TripoSR.from_pretrained(tiny_model_dir)
    scene_code = model.encode([prepare_image(reference_picture())])[0]
    settings = load_settings(model=str(tiny_model_dir), device="cpu", mc_resolution=48, target_faces=1000,
                             bake_texture=False)
    fractions: list[float] = []
    grid = model.density_grid(scene_code, settings.mc_resolution, level=settings.mc_threshold)
    color_at = color_query(model, scene_code, settings.chunk_size)
    mesh, facts = build_mesh(grid, color_at, model.radius, settings, fractions.append)
    assert facts.marching_cubes_faces > 2000
    assert facts.marching_cubes_faces >= facts.faces_after_floaters > facts.faces
    assert 900 <= facts.faces == len(mesh.faces) <= 1000
    assert facts.pieces >= 1 + facts.pieces_dropped
    assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    assert solid_facts(mesh) == SolidFacts(facts.watertight, facts.is_volume, facts.bodies)
    assert fractions == sorted(fractions) and len(fractions) >= 3

    # With a texture to bake, the texture carries the colour: no vertex colours are queried.
    queried: list[int] = []
    baked_settings = settings.model_copy(update={"bake_texture": True})
    bare, bare_facts = build_mesh(grid, lambda points: queried.append(len(points)) or color_at(points),
                                  model.radius, baked_settings, lambda fraction: None)
    assert queried == [] and bare.visual.kind is None
    assert bare_facts == facts and (bare.vertices == mesh.vertices).all() and (bare.faces == mesh.faces).all()


# As the daemon runs the pipeline: torch and the simplifier first imported on the worker thread,
# which ends before the process does (recond.pipeline.topology says why that is unsafe for pymeshlab).
ON_A_WORKER_THREAD = """
import sys, threading
import trimesh
from recond.pipeline.warm import load_main_thread_libraries
if sys.argv[1] == "loaded first":
    load_main_thread_libraries()
def work():
    import torch
    try:
        from recond.pipeline.topology import simplify
    except ImportError as refused:
        print("ImportError", refused)
        return
    print(len(simplify(trimesh.creation.icosphere(subdivisions=4), 1000).faces))
worker = threading.Thread(target=work)
worker.start()
worker.join()
"""


@pytest.mark.parametrize("order", ["loaded first", "not loaded"])
def test_simplifier_used_on_a_worker_thread_leaves_a_clean_exit(order: str) -> None:
    """Before the fix this process aborted at exit (malloc_consolidate, exit code 134); now the
    first import off the main thread is refused with the reason instead."""
    completed = subprocess.run([sys.executable, "-c", ON_A_WORKER_THREAD, order], capture_output=True,
                               text=True, timeout=120, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-2000:]
    expected = "1000" if order == "loaded first" else "ImportError pymeshlab must first be imported on the main thread"
    assert completed.stdout.splitlines()[-1].startswith(expected), completed.stdout + completed.stderr
