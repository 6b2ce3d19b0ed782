"""End to end: the real `recond` process, the real Pipeline with the tiny checkpoint, real
pictures dropped the way a network share writes them, and `reconctl` reading the result.

Small settings keep each job to a few seconds on a CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PICTURES = ("chair.png", "robot.png", "flamingo.png")


class Installation:
    """Temporary folders, a config file and helpers to run `recond` and `reconctl` on them."""

    def __init__(self, root: Path, model_dir: Path, examples: Path, **settings: Any) -> None:
        self.root, self.examples = root, examples
        self.inbox, self.outbox, self.state = root / "inbox", root / "outbox", root / "state"
        self.config = root / "recond.toml"
        values = {"inbox": str(self.inbox), "outbox": str(self.outbox), "state_dir": str(self.state),
                  "model": str(model_dir), "device": "cpu", "settle_seconds": 0.5,
                  "poll_interval": 0.2, "mc_resolution": 32, "texture_resolution": 128,
                  "render_views": 4, "render_size": 64, "video_fps": 4, "model_retry_seconds": 60,
                  "rembg_home": str(root / "no-rembg-models"), **settings}
        self.write_config(values)
        self.inbox.mkdir(parents=True)
        self.process: subprocess.Popen | None = None
        self.log = (root / "daemon.stderr").open("ab")

    def write_config(self, values: dict[str, Any]) -> None:
        self.config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))

    def start(self, *arguments: str, wrapper: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """Run `recond` (under ``wrapper``, e.g. unshare, and with ``env`` added)."""
        environment = {key: value for key, value in os.environ.items() if not key.startswith("RECOND_")}
        self.process = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "recond.daemon", "--config", str(self.config), *arguments],
            cwd=REPO, env={**environment, **(env or {})}, stderr=self.log)
        return self.process

    def reconctl(self, *arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "recond.cli", "--config", str(self.config),
                               *arguments], cwd=REPO, capture_output=True, text=True, timeout=120)

    def status(self) -> dict[str, Any]:
        result = self.reconctl("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def wait(self, condition: Callable[[dict[str, Any]], Any], timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if condition(status):
                return status
            assert self.process is None or self.process.poll() is None, self.stderr()
            time.sleep(0.1)
        raise AssertionError(f"daemon never reached the expected state; last status {status}\n{self.stderr()}")

    def wait_for_stage(self, stages: tuple[str, ...], timeout: float = 60) -> str:
        """Poll the job table directly (milliseconds, unlike a reconctl run) for a running stage."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with sqlite3.connect(self.state / "recond.db") as db:
                    row = db.execute("select stage from jobs where state = 'running'").fetchone()
            except sqlite3.Error:
                row = None
            if row and row[0] in stages:
                return row[0]
            time.sleep(0.01)
        raise AssertionError(f"no job reached {stages} within {timeout} s\n{self.stderr()}")

    def drop_like_a_share(self, picture: str, folder: str = "") -> Path:
        """Write under a .part name in slow chunks, then rename into place, as Samba clients do."""
        data = (self.examples / picture).read_bytes()
        target = self.inbox / folder / picture
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(picture + ".part")
        with partial.open("wb") as stream:
            for start in range(0, len(data), len(data) // 4 + 1):
                stream.write(data[start:start + len(data) // 4 + 1])
                stream.flush()
                time.sleep(0.15)
        partial.rename(target)
        return target

    def result_folders(self) -> list[Path]:
        """Result folders (the outbox also holds the gallery, index.html)."""
        return sorted(p for p in self.outbox.iterdir() if p.is_dir()) if self.outbox.is_dir() else []

    def stderr_lines(self) -> int:
        self.log.flush()
        return (self.root / "daemon.stderr").read_bytes().count(b"\n")

    def stderr(self) -> str:
        self.log.flush()
        return (self.root / "daemon.stderr").read_text(errors="replace")[-4000:]

    def stop(self) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        return self.process.returncode if self.process else None


@pytest.fixture
def installation(tmp_path: Path, tiny_model_dir: Path, shared_dir: Path) -> Iterator[Installation]:
    setup = Installation(tmp_path, tiny_model_dir, shared_dir / "examples")
    yield setup
    setup.stop()


def counts(status: dict[str, Any]) -> dict[str, int]:
    return status["counts"]


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
SLOWER_JOB = {"mc_resolution": 48, "texture_resolution": 256, "render_views": 8}


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
