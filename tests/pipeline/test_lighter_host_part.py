"""The lighter host part (issue 23) makes the files it made before: bench_chair's chair, its
textured mesh rendered with the back faces of its closed surface culled and without, frame by
frame. Real model (bench_chair), real picture, real mesh stage and bake; no stand-ins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recond.config import JobSettings, ModelSettings
from recond.inbox.dropped import read_source
from recond.pipeline.export import orient_y_up
from recond.pipeline.host import DecoderField
from recond.pipeline.mesh import build_mesh
from recond.pipeline.reconstruct import color_query
from recond.pipeline.runner import Pipeline
from recond.pipeline.texture import bake_texture
from recond.pipeline.turntable import _facing, _orbit_camera, _scene_tensors, render_turntable

VIEWS, SIZE = 6, 256  # the default frame size; fewer views than the default 30
# Culling changes a pixel only where a pixel centre falls on an edge between two front faces
# and rounding puts it outside both: 0 to 4 of 65,536 pixels a frame on bench_chair at 30 views.
MAX_CHANGED_PIXELS = 0.001
MAX_MEAN_DIFFERENCE = 0.01  # of 255


@pytest.fixture(scope="module")
def chair_mesh(shared_dir: Path):
    job = JobSettings(mc_resolution=128, texture_resolution=512)
    pipeline = Pipeline(ModelSettings(model=str(shared_dir / "reference" / "bench_chair"), device="cpu",
                                      background="alpha"))
    handoff = pipeline.device_part(read_source(shared_dir / "examples" / "chair.png", job.max_file_bytes), job)
    color_at = color_query(DecoderField(handoff.decoder), torch.from_numpy(handoff.scene_code), job.chunk_size)
    mesh, facts = build_mesh(torch.from_numpy(handoff.density.full_grid()), color_at,
                             handoff.decoder.renderer.radius, job, lambda fraction: None)
    assert facts.is_volume  # a closed solid: what culling needs
    textured, _ = bake_texture(mesh, color_at, job.texture_resolution)
    return orient_y_up(textured)


def test_culling_a_closed_solids_back_faces_leaves_its_turntable_frames_as_they_were(chair_mesh) -> None:
    every_face = np.stack(render_turntable(chair_mesh, VIEWS, SIZE))
    front_faces = np.stack(render_turntable(chair_mesh, VIEWS, SIZE, closed=True))
    changed = np.abs(every_face.astype(int) - front_faces.astype(int))
    assert changed.max(-1).astype(bool).mean() <= MAX_CHANGED_PIXELS
    assert changed.mean() <= MAX_MEAN_DIFFERENCE
    assert (every_face < 250).any(-1).mean() > 0.1  # the chair fills part of each frame


def test_about_half_the_faces_of_a_closed_solid_are_rasterised_per_view(chair_mesh) -> None:
    scene = _scene_tensors(chair_mesh, torch.device("cpu"), closed=True)
    for view in range(4):
        eye = _orbit_camera(scene, 2 * np.pi * view / 4)[0]
        assert 0.3 < len(_facing(scene, eye)) / len(scene.faces) < 0.7
    assert len(_facing(_scene_tensors(chair_mesh, torch.device("cpu")), eye)) == len(chair_mesh.faces)
