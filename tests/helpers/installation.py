"""A real recond daemon on its own folders and config, started as a user would (`python -m recond.daemon`),
with reconctl's status read back: what the end-to-end and web tests drive."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


from helpers.paths import REPO
from recond.config import load_settings
from recond.status import status_report


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
        """What `reconctl status --json` prints, from a real reconctl run."""
        result = self.reconctl("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def report(self) -> dict[str, Any]:
        """The same report, made in this process by the function `reconctl status --json` prints
        (recond.status.status_report): for polling. A reconctl run per poll is a Python start and
        its imports, about 0.6 CPU-s; the waits of the daemon tests spent minutes of the suite's
        CPU on them. A test about the command itself calls ``status``."""
        return json.loads(json.dumps(status_report(load_settings(self.config))))

    def wait(self, condition: Callable[[dict[str, Any]], Any], timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.report()
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


# A job slow enough to be caught mid-way (kill -9, SIGTERM) on this machine.
SLOWER_JOB = {"mc_resolution": 48, "texture_resolution": 256, "render_views": 8}


def counts(status: dict[str, Any]) -> dict[str, int]:
    return status["counts"]


def queued(installation: Installation) -> int:
    """Queued jobs, read straight from the database (a reconctl run per poll is too slow here)."""
    try:
        with sqlite3.connect(installation.state / "recond.db", timeout=1) as db:
            return int(db.execute("select count(*) from jobs where state = 'queued'").fetchone()[0])
    except sqlite3.Error:
        return 0


def log_events(installation: Installation) -> list[dict]:
    path = installation.state / "recond.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_until(condition, timeout: float, installation: Installation | None = None) -> float:
    """Seconds it took ``condition()`` to hold; fails after ``timeout`` (or if the daemon died)."""
    started = time.monotonic()
    while not condition():
        if installation and installation.process and installation.process.poll() is not None:
            raise AssertionError(f"recond exited\n{installation.stderr()}")
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s" + (f"\n{installation.stderr()}" if installation else ""))
        time.sleep(0.1)
    return time.monotonic() - started


def without_model(tmp_path: Path, **settings: object) -> Installation:
    """An installation whose weights are missing: jobs are queued and stay queued."""
    return Installation(tmp_path, tmp_path / "no-weights", tmp_path, **settings)


def wait_until_watching(installation: Installation) -> None:
    wait_until(lambda: any(e["event"] == "watching inbox" for e in log_events(installation)), 30,
               installation)
