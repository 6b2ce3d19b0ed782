"""The unwrap is bounded (recond/pipeline/texture.py, forked.py; issue 22): xatlas never sees a
mesh with more bodies than the atlas holds charts, runs in a fork that is killed past its share
of the texture stage's limit, and either way the mesh keeps its vertex colours with a warning."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from recond.pipeline.forked import ForkedCallFailed, call_within
from recond.pipeline.progress import StageClock
from recond.pipeline.texture import _unwrap_with, bake_within_limits, chart_capacity


def GREY(points: np.ndarray) -> np.ndarray:
    """A colour field: grey everywhere."""
    return np.full((len(points), 3), 0.5, dtype=np.float32)


def clock(limit_s: float, reports: list[float] | None = None) -> StageClock:
    return StageClock((reports if reports is not None else []).append, limit_s, 1.0)


def test_a_mesh_of_many_bodies_is_not_unwrapped_and_keeps_vertex_colours() -> None:
    specks = [trimesh.creation.icosphere(subdivisions=0, radius=0.01).apply_translation([0.05 * i, 0.05 * j, 0])
              for i in range(20) for j in range(15)]  # 300 bodies > 256 charts at 256 texels
    mesh = trimesh.util.concatenate(specks)
    assert chart_capacity(256) == 256
    kept, atlas, warnings = bake_within_limits(mesh, GREY, 256, clock(60))
    assert kept is mesh and atlas is None
    assert warnings == [("the mesh has 300 separate bodies, more charts than a 256 texture holds (256), "
                         "so it keeps vertex colours")]


def test_an_unwrap_past_its_share_of_the_stage_limit_is_stopped() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=5)  # 20,480 faces: xatlas takes seconds here
    reports: list[float] = []
    kept, atlas, warnings = bake_within_limits(sphere, GREY, 1024, clock(0.4, reports))  # share: 0.2 s
    assert kept is sphere and atlas is None
    assert "the UV unwrap ran past its 0 s share of the texture stage's limit" in warnings[0]
    assert reports  # the stage kept reporting (a stopping daemon's cancellation reaches it)


def test_an_unwrap_within_its_share_bakes_a_texture() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    baked, atlas, warnings = bake_within_limits(sphere, GREY, 128, clock(120))
    assert warnings == [] and atlas is not None and atlas.charts >= 1
    assert isinstance(baked.visual, trimesh.visual.TextureVisuals)


def test_charts_past_the_atlas_from_the_quick_unwrap_are_made_again_the_thorough_way() -> None:
    # A bumpy sphere (fixed seed): xatlas's quick unwrap (one growing pass, no rotations) makes
    # ~350 charts of it, its defaults ~254; a 272 texture holds 289.
    sphere = trimesh.creation.icosphere(subdivisions=4)
    bumps = np.random.default_rng(2).random((len(sphere.vertices), 1))
    bumpy = trimesh.Trimesh(sphere.vertices + 0.15 * bumps * sphere.vertex_normals, sphere.faces)
    capacity = chart_capacity(272)
    assert _unwrap_with(bumpy, 272, quick=True)[3] > capacity  # the quick way alone would not fit
    baked, atlas, warnings = bake_within_limits(bumpy, GREY, 272, clock(120))
    assert warnings == [] and atlas is not None and atlas.charts <= capacity
    assert isinstance(baked.visual, trimesh.visual.TextureVisuals)


def _pid_then_sleep(pid_file: Path) -> int:
    pid_file.write_text(str(os.getpid()))
    time.sleep(60)
    return 0


def test_a_forked_call_past_its_time_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    assert call_within(lambda: _pid_then_sleep(pid_file), 0.5, clock(60)) is None
    child = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # killed and reaped


def test_a_forked_call_returns_its_value_or_its_error() -> None:
    assert call_within(lambda: np.arange(300_000).sum(), 30, clock(60)) == np.arange(300_000).sum()
    with pytest.raises(ForkedCallFailed, match="ZeroDivisionError"):
        call_within(lambda: 1 // 0, 30, clock(60))


def test_a_forked_call_that_crashes_is_an_error_not_a_lost_process() -> None:
    # xatlas itself crashed so on an 82k-face icosphere (SIGSEGV): the host process goes on.
    with pytest.raises(ForkedCallFailed, match="killed by SIGSEGV"):
        call_within(lambda: os.kill(os.getpid(), signal.SIGSEGV), 30, clock(60))
