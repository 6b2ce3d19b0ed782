"""Any surface reaches the face budget (recond/pipeline/budget.py, issue 22): a clean one keeps
its topology, a noisy field (the tiny noisy checkpoint, a real model and a real marching cubes)
is degraded by measuring it, with a warning in words, and a hard cap holds whatever remains."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from recond.config import JobSettings, load_settings, part_of
from recond.pipeline.contract import SourcePicture
from recond.pipeline.runner import Pipeline
from recond.triposr.isosurface import REFINE_STRIDE
from recond.pipeline.budget import (
    BUDGET_SLACK,
    NOISY,
    NOISY_FACES_PER_TARGET,
    Budgeting,
    estimate_faces,
    hard_cap,
    to_budget,
)
from recond.pipeline.mesh import build_mesh, drop_floaters, surface
from recond.pipeline.topology import solid_facts
from recond.triposr.model import TripoSR
from recond.triposr.preprocess import prepare_image
from recond.triposr.tiny import (
    SURFACE_THRESHOLD,
    build_noisy_checkpoint,
    reference_picture,
)


def GREY(points: np.ndarray) -> np.ndarray:
    """A colour field: grey everywhere."""
    return np.full((len(points), 3), 0.5, dtype=np.float32)


@pytest.fixture(scope="module")
def noisy_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_noisy_checkpoint(tmp_path_factory.mktemp("noisy"))


@pytest.fixture(scope="module")
def noisy_grid(noisy_model_dir: Path) -> tuple[torch.Tensor, float]:
    """The noisy checkpoint's density grid at 64^3 (~350k faces, ~2,600 handles) and its radius."""
    model = TripoSR.from_pretrained(noisy_model_dir)
    scene_code = model.encode([prepare_image(reference_picture())])[0]
    return model.density_grid(scene_code, 64), model.radius


def test_the_device_part_samples_a_noisy_field_coarser_and_says_so(noisy_model_dir: Path, tmp_path: Path) -> None:
    """The work before the mesh stage is bounded too: at 128^3 refining the noise would evaluate
    every one of the 2.1 M points (the full-size model: minutes on a CPU); a 32^3 grid instead."""
    settings = load_settings(model=str(noisy_model_dir), device="cpu", rembg_home=tmp_path / "rembg",
                             mc_resolution=128)
    picture = io.BytesIO()
    reference_picture().save(picture, format="PNG")
    handoff = Pipeline(settings).device_part(SourcePicture("noise.png", picture.getvalue()),
                                             part_of(settings, JobSettings))
    assert handoff.density.resolution == 128 // REFINE_STRIDE
    assert any(warning.startswith("the density field is noisy") and "32^3" in warning
               for warning in handoff.warnings), handoff.warnings


def test_a_noisy_field_reaches_the_budget_with_a_warning(noisy_grid: tuple[torch.Tensor, float]) -> None:
    grid, radius = noisy_grid
    settings = JobSettings(target_faces=2000)
    mesh, facts = build_mesh(grid, GREY, radius, settings, lambda fraction: None)
    assert len(mesh.faces) == facts.faces <= 2000 * BUDGET_SLACK
    # The work before simplifying was bounded too: the field was meshed coarser, so what the
    # collapse got was within NOISY_FACES_PER_TARGET x the target, not the 350k faces of 64^3.
    assert facts.grid_resolution < 64
    assert facts.faces_after_floaters <= NOISY_FACES_PER_TARGET * 2000
    warning = facts.warnings()[0]
    assert warning.startswith(f"{NOISY} (") and "instead of 64^3" in warning
    record = facts.as_record()
    assert record["degraded"] and record["grid_resolution"] == facts.grid_resolution


def test_a_noisy_surface_is_simplified_without_its_topology_then_capped(
        noisy_grid: tuple[torch.Tensor, float]) -> None:
    grid, radius = noisy_grid
    kept, pieces, dropped = drop_floaters(surface(grid, SURFACE_THRESHOLD, radius), 0.02)
    budgeting = Budgeting(64)
    simple = to_budget(kept, 5000, pieces - dropped, 0.02, budgeting)
    assert len(simple.faces) <= 5000 * BUDGET_SLACK
    assert budgeting.roughness is not None and budgeting.roughness.handles > 1000  # measured first
    assert budgeting.topology_kept is False
    assert "simplified without keeping it" in budgeting.steps[0]
    assert (budgeting.warning() or "").startswith(NOISY)


def test_a_clean_closed_surface_keeps_its_topology_and_gets_no_warning() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=5)  # 20,480 faces, genus 0
    budgeting = Budgeting(256)
    simple = to_budget(sphere, 2000, 1, 0.02, budgeting)
    assert len(simple.faces) <= 2000 * BUDGET_SLACK
    assert budgeting.topology_kept and budgeting.steps == [] and budgeting.warning() is None
    assert solid_facts(simple).is_volume and solid_facts(simple).bodies == 1


def test_the_hard_cap_keeps_whole_bodies_largest_first() -> None:
    bodies = [trimesh.creation.icosphere(subdivisions=3, radius=radius).apply_translation([3 * index, 0, 0])
              for index, radius in enumerate((1.0, 0.5, 0.8))]  # 1,280 faces each
    budgeting = Budgeting(256)
    capped = hard_cap(trimesh.util.concatenate(bodies), 2600, budgeting)
    assert len(capped.faces) == 2560  # the two largest, whole
    assert capped.bounds[0][0] == pytest.approx(-1.0) and capped.bounds[1][0] == pytest.approx(6.8)
    assert budgeting.steps == ["1 body beyond 2,600 faces dropped"]
    cut = hard_cap(bodies[0], 1000, Budgeting(256))
    assert len(cut.faces) == 1000


def test_the_face_estimate_before_marching_cubes_errs_high_but_not_far(
        noisy_grid: tuple[torch.Tensor, float]) -> None:
    grid, radius = noisy_grid
    faces = len(surface(grid, SURFACE_THRESHOLD, radius).faces)
    assert faces <= estimate_faces(grid, SURFACE_THRESHOLD) <= 1.5 * faces
    coarse = torch.nn.functional.interpolate(grid[None, None], size=(24,) * 3, mode="trilinear",
                                             align_corners=True)[0, 0]
    assert len(surface(coarse, SURFACE_THRESHOLD, radius).faces) <= estimate_faces(coarse, SURFACE_THRESHOLD)


def test_a_grid_past_max_surface_faces_is_meshed_coarser(noisy_grid: tuple[torch.Tensor, float]) -> None:
    grid, radius = noisy_grid
    settings = JobSettings(target_faces=0, max_surface_faces=50_000)  # 0: no simplification at all
    _, facts = build_mesh(grid, GREY, radius, settings, lambda fraction: None)
    assert facts.marching_cubes_faces <= 50_000 < estimate_faces(grid, SURFACE_THRESHOLD)
    assert "so it was meshed on a" in facts.degraded[0]
