"""recond stays alive and says so when its surroundings misbehave (issue 18): a watcher that
drops events or runs out of watches, a hung stage, a busy or vanished job database, a full
state disk, a file that never stops changing, a second daemon.

Real daemons in subprocesses, real signals, mounts and namespaces; every picture's bytes end
in exactly one place. The 10,000-file and 90-s-lock cases carry the ``slow`` marker (CI runs
them: the README's test command runs every test).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import assert_each_in_one_place
from test_daemon_e2e import Installation


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


def watching(installation: Installation) -> None:
    wait_until(lambda: any(e["event"] == "watching inbox" for e in log_events(installation)), 30,
               installation)


@pytest.mark.slow
def test_10000_files_dropped_while_events_overflow_are_all_queued_within_a_minute(tmp_path: Path) -> None:
    installation = without_model(tmp_path)
    try:
        installation.start()
        watching(installation)
        # Frozen, recond reads no events: 10,000 files make ~30,000 (create, modify, close), past
        # the kernel's queue of fs.inotify.max_queued_events (16,384 here), which overflows.
        installation.process.send_signal(signal.SIGSTOP)
        pictures = [b"%05d" % number for number in range(10_000)]
        for number, data in enumerate(pictures):
            (installation.inbox / f"p{number:05d}.png").write_bytes(data)
        installation.process.send_signal(signal.SIGCONT)
        seconds = wait_until(lambda: queued(installation) == len(pictures), 60, installation)
        print(f"10,000 files queued {seconds:.1f} s after the watcher woke")
        assert any("overflow" in e["event"] for e in log_events(installation))
        assert installation.stop() == 0
        assert_each_in_one_place(pictures, installation.inbox, installation.outbox)
    finally:
        installation.stop()


def test_folders_past_the_inotify_watch_limit_are_reported_and_polled(tmp_path: Path) -> None:
    installation = without_model(tmp_path)
    folders = ["a", "b", "c", "d", "e", "f"]
    for folder in folders:
        (installation.inbox / folder).mkdir()
    # A user namespace of its own has its own watch limit: 3 watches for the inbox and six folders.
    limited = ("unshare", "--user", "--map-root-user", "sh", "-c",
               'echo 3 > /proc/sys/user/max_inotify_watches && exec "$@"', "sh")
    try:
        installation.start(wrapper=limited)
        status = installation.wait(lambda s: any("watch limit" in w for w in s["daemon"]["watcher_warnings"]))
        assert any("polled" in w for w in status["daemon"]["watcher_warnings"])
        assert any("watch limit" in e["event"] for e in log_events(installation))
        pictures = [folder.encode() * 3 for folder in folders]
        for folder, data in zip(folders, pictures):
            (installation.inbox / folder / "mug.png").write_bytes(data)
        # Well before the 300 s rescan: the unwatched folders are polled.
        wait_until(lambda: queued(installation) == len(folders), 20, installation)
        assert installation.stop() == 0
        assert_each_in_one_place(pictures, installation.inbox, installation.outbox)
    finally:
        installation.stop()
