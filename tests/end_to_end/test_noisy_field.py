"""A noisy field through the real daemon (issue 22): the tiny noisy checkpoint's surface at 64^3
(~350k faces, ~2,600 handles) still gives a published result in bounded work, at most
target_faces (+5 %), with the warning in words on the job and what was done in job.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.places import assert_in_one_place
from helpers.installation import Installation, counts

from recond.pipeline.budget import BUDGET_SLACK, NOISY
from recond.triposr.tiny import build_noisy_checkpoint


@pytest.fixture(scope="module")
def noisy_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_noisy_checkpoint(tmp_path_factory.mktemp("noisy_triposr"))


def test_a_noisy_field_through_the_daemon_gives_a_result_with_a_warning(
        tmp_path: Path, noisy_model_dir: Path, shared_dir: Path) -> None:
    installation = Installation(tmp_path, noisy_model_dir, shared_dir / "examples", mc_resolution=64,
                                target_faces=2000, host_workers=0)
    try:
        installation.start()
        installation.drop_like_a_share("chair.png")
        status = installation.wait(lambda s: counts(s)["done"] == 1, timeout=180)
        assert counts(status)["failed"] == 0
        job = json.loads(installation.reconctl("show", str(status["recent"][0]["id"]), "--json").stdout)
        assert any(warning.startswith(f"{NOISY} (") for warning in job["warnings"]), job["warnings"]
        folder = Path(job["output"])
        record = json.loads((folder / "job.json").read_text())
        assert record["faces"] == record["mesh"]["faces"] <= 2000 * BUDGET_SLACK
        assert record["mesh"]["degraded"] and record["mesh"]["grid_resolution"] < 64
        assert record["warnings"] == job["warnings"]
        assert {"mesh.glb", "mesh.stl", "render.mp4", "index.html"} <= {path.name for path in folder.iterdir()}
        assert_in_one_place((installation.examples / "chair.png").read_bytes(), installation.inbox,
                            installation.outbox)
    finally:
        installation.stop()
