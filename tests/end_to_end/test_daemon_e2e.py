"""End to end: the real `recond` process, the real Pipeline with the tiny checkpoint, real
pictures dropped the way a network share writes them, and `reconctl` reading the result.

Small settings keep each job to a few seconds on a CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.paths import REPO
from helpers.installation import SLOWER_JOB, Installation, counts
PICTURES = ("chair.png", "robot.png", "flamingo.png")


@pytest.fixture
def installation(tmp_path: Path, tiny_model_dir: Path, shared_dir: Path) -> Iterator[Installation]:
    setup = Installation(tmp_path, tiny_model_dir, shared_dir / "examples")
    yield setup
    setup.stop()


def assert_complete_result(folder: Path, original: bytes) -> None:
    """A published folder holds everything, with the source byte-identical."""
    names = {path.name for path in folder.iterdir()}
    assert {"job.json", "index.html", "render.mp4", "source.png"} <= names, names
    assert any(name.endswith(".glb") for name in names), names
    assert (folder / "source.png").read_bytes() == original


def test_pictures_dropped_like_a_share_become_complete_result_folders(installation: Installation) -> None:
    installation.start()
    dropped = [installation.drop_like_a_share("chair.png"),
               installation.drop_like_a_share("robot.png", folder="shelf")]
    status = installation.wait(lambda s: counts(s)["done"] == 2)
    assert status["daemon"]["running"] and status["daemon"]["model"] == "ready"
    folders = installation.result_folders()
    assert len(folders) == 2 and not any(f.name.startswith(".") for f in folders)
    assert any(f.name.endswith("_shelf_robot") for f in folders)
    for path, folder in zip(sorted(dropped, key=lambda p: p.name),
                            sorted(folders, key=lambda f: f.name.split("_")[-1])):
        assert_complete_result(folder, (installation.examples / path.name).read_bytes())
        assert not path.exists()  # the original moved into its result folder
    assert {job["output"] for job in status["recent"]} == {str(f) for f in folders}
    second = subprocess.run([sys.executable, "-m", "recond.daemon", "--config", str(installation.config)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and "already using" in second.stderr  # one daemon per database
    assert installation.stop() == 0
    events = [json.loads(line) for line in (installation.state / "recond.log").read_text().splitlines()]
    done = [event for event in events if event["event"] == "job done"]
    assert {event["file"] for event in done} == {"chair.png", "shelf/robot.png"}
    assert all(event["seconds"] > 0 and event["job"] for event in done)
    assert any(event["event"] == "job stage" and "eta_s" in event for event in events)


def test_refuses_to_start_when_the_outbox_lies_inside_the_inbox(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    env = {**os.environ, "RECOND_INBOX": str(inbox), "RECOND_OUTBOX": str(inbox / "results")}
    result = subprocess.run([sys.executable, "-m", "recond.daemon"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "outbox" in result.stderr and "inside the inbox" in result.stderr


# The upper end of the small settings, so a job lasts long enough to be interrupted mid-way.


def test_kill_9_mid_job_then_restart_completes_the_job_exactly_once(tmp_path: Path, tiny_model_dir: Path,
                                                                    shared_dir: Path) -> None:
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples", **SLOWER_JOB)
    try:
        kill_mid_job_and_restart(installation)
    finally:
        installation.stop()


def kill_mid_job_and_restart(installation: Installation) -> None:
    installation.start()
    installation.drop_like_a_share("flamingo.png")
    installation.wait_for_stage(("texture", "export"))
    installation.process.kill()
    installation.process.wait(10)
    assert installation.status()["daemon"]["running"] is False
    assert not [f for f in installation.result_folders() if not f.name.startswith(".")]

    installation.start()
    status = installation.wait(lambda s: counts(s)["done"] == 1)
    folders = installation.result_folders()
    assert len(folders) == 1 and not folders[0].name.startswith(".")  # no partial left behind
    assert_complete_result(folders[0], (installation.examples / "flamingo.png").read_bytes())
    assert counts(status)["queued"] == counts(status)["running"] == counts(status)["failed"] == 0
    job = json.loads(installation.reconctl("show", str(status["recent"][0]["id"]), "--json").stdout)
    assert job["attempts"] == 1  # its host part ran in a host process: the daemon's crash is not its own
    assert not (installation.inbox / "flamingo.png").exists()


def test_polling_mode_keeps_working_after_the_inbox_vanishes(tmp_path: Path, tiny_model_dir: Path,
                                                             shared_dir: Path) -> None:
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples", polling=True)
    try:
        installation.start()
        installation.drop_like_a_share("chair.png")
        installation.wait(lambda s: counts(s)["done"] == 1)
        shutil.rmtree(installation.inbox)  # the share drops away ...
        installation.wait(lambda s: any("missing" in w for w in s["daemon"]["watcher_warnings"]))
        installation.inbox.mkdir()  # ... and comes back
        installation.wait(lambda s: any("re-arming" in w for w in s["daemon"]["watcher_warnings"]))
        installation.drop_like_a_share("robot.png")
        installation.wait(lambda s: counts(s)["done"] == 2)
        assert len(installation.result_folders()) == 2
        assert installation.stop() == 0
    finally:
        installation.stop()


def test_sigterm_mid_job_exits_0_and_the_job_is_kept(tmp_path: Path, tiny_model_dir: Path,
                                                     shared_dir: Path) -> None:
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples", **SLOWER_JOB)
    try:
        stop_mid_job_and_finish_with_once(installation)
    finally:
        installation.stop()


def stop_mid_job_and_finish_with_once(installation: Installation) -> None:
    installation.start()
    installation.drop_like_a_share("robot.png")
    # Any stage well before the end: the encode alone ("reconstruct") now lasts a fraction of a
    # second with the tiny model, too short for a poll to be sure to see it on a busy machine.
    installation.wait_for_stage(("reconstruct", "mesh", "texture"))
    assert installation.stop() == 0
    status = installation.status()
    assert status["daemon"]["running"] is False
    # Cancelled at the next stage boundary and put back, without counting an attempt.
    assert counts(status)["queued"] == 1 and counts(status)["done"] == counts(status)["failed"] == 0
    job = json.loads(installation.reconctl("show", str(status["recent"][0]["id"]), "--json").stdout)
    assert job["attempts"] == 0 and job["stage"] is None
    assert installation.result_folders() == []  # the partial folder is gone too
    assert (installation.inbox / "robot.png").exists()
    assert installation.start("--once").wait(120) == 0  # --once finishes what is waiting
    assert counts(installation.status())["done"] == 1
    assert len(installation.result_folders()) == 1


def test_without_weights_drops_are_queued_and_sighup_loads_the_model(tmp_path: Path, tiny_model_dir: Path,
                                                                     shared_dir: Path) -> None:
    installation = Installation(tmp_path, tmp_path / "weights-not-copied-yet", shared_dir / "examples")
    try:
        installation.start()
        installation.drop_like_a_share("chair.png")
        status = installation.wait(lambda s: counts(s)["queued"] == 1 and s["daemon"]["model"] == "missing")
        assert "RECOND_MODEL" in status["daemon"]["model_detail"]
        doctor = installation.reconctl("doctor")
        assert doctor.returncode == 1 and "weights-not-copied-yet" in doctor.stdout
        assert "model not loaded" in installation.stderr()
        config = installation.config.read_text().replace(str(tmp_path / "weights-not-copied-yet"),
                                                         str(tiny_model_dir))
        installation.config.write_text(config)
        installation.process.send_signal(signal.SIGHUP)
        status = installation.wait(lambda s: counts(s)["done"] == 1)
        assert counts(status)["failed"] == 0 and status["daemon"]["model"] == "ready"
    finally:
        installation.stop()
