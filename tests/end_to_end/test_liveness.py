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
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from recond.store import Store

from helpers.installation import Installation, log_events, queued, wait_until, wait_until_watching, without_model
from helpers.paths import REPO
from helpers.places import assert_each_in_one_place
from helpers.privileged import as_nobody, mounted


def test_deleting_the_lock_file_does_not_let_a_second_daemon_in(tmp_path: Path) -> None:
    installation = without_model(tmp_path)
    try:
        installation.start()
        wait_until_watching(installation)
        (installation.state / "recond.lock").unlink()
        second = subprocess.run([sys.executable, "-m", "recond.daemon", "--config", str(installation.config)],
                                cwd=REPO, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "already using" in second.stderr, second.stderr
        picture = b"still the first daemon's"
        (installation.inbox / "mug.png").write_bytes(picture)
        wait_until(lambda: queued(installation) == 1, 20, installation)
        assert installation.stop() == 0
        assert_each_in_one_place([picture], installation.inbox, installation.outbox)
    finally:
        installation.stop()


def test_database_deleted_under_the_daemon_stops_it_and_the_next_one_knows_the_results(
        tmp_path: Path, tiny_model_dir: Path, shared_dir: Path) -> None:
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples")
    picture = (shared_dir / "examples" / "chair.png").read_bytes()
    try:
        installation.start()
        installation.drop_like_a_share("chair.png")
        installation.wait(lambda s: s["counts"]["done"] == 1, timeout=300)
        for name in ("recond.db", "recond.db-wal", "recond.db-shm"):
            (installation.state / name).unlink(missing_ok=True)
        assert installation.process.wait(30) == 1
        assert "was deleted while recond ran" in installation.stderr()

        installation.start()  # a new, empty database: it learns the result from the outbox
        installation.drop_like_a_share("chair.png")
        # Known bytes: the copy is removed, its bytes being in the result, and nothing is queued.
        wait_until(lambda: not (installation.inbox / "chair.png").exists(), 30, installation)
        status = installation.status()
        assert status["counts"]["done"] == 1 and status["counts"]["queued"] == status["counts"]["running"] == 0
        assert status["recent"][0]["output"] == str(installation.result_folders()[0])
        assert len(installation.result_folders()) == 1  # not a second result
        assert installation.stop() == 0
        assert_each_in_one_place([picture], installation.inbox, installation.outbox)
    finally:
        installation.stop()


def test_root_owned_read_only_database_gives_one_sentence_not_a_traceback(open_dir: Path) -> None:
    installation = without_model(open_dir)
    installation.state.mkdir()
    Store(installation.state / "recond.db").close()  # root's, 0644 (recond run once as root) ...
    for path in (installation.inbox, installation.state, installation.state / "recond.db", installation.config):
        path.chmod(0o755 if path.is_dir() else 0o644)
    os.chown(installation.state, 65534, 65534)  # ... in the service user's state dir
    picture = b"waits for a usable database"
    (installation.inbox / "mug.png").write_bytes(picture)
    daemon = as_nobody(sys.executable, "-m", "recond.daemon", "--config", str(installation.config), "--once")
    assert "Traceback" not in daemon.stderr and daemon.stderr.count("\n") == 1, daemon.stderr
    assert daemon.returncode == 1 and "job database" in daemon.stderr and "read-only" in daemon.stderr
    assert "move it aside" not in daemon.stderr
    status = as_nobody(sys.executable, "-m", "recond.cli", "--config", str(installation.config), "status")
    assert status.returncode == 0 and "Traceback" not in status.stderr  # reading needs no write access
    assert_each_in_one_place([picture], installation.inbox, installation.outbox)


def freezing_ffmpeg(folder: Path) -> Path:
    """An ffmpeg for IMAGEIO_FFMPEG_EXE that stops itself (SIGSTOP) the first time it is run,
    then runs the real one: a child frozen the way the issue's was, at a known moment."""
    import imageio_ffmpeg

    script = folder / "ffmpeg"
    script.write_text(f"#!/bin/sh\nif [ ! -e {folder}/frozen-once ]; then : > {folder}/frozen-once; "
                      f"kill -STOP $$; fi\nexec {imageio_ffmpeg.get_ffmpeg_exe()} \"$@\"\n")
    script.chmod(0o755)
    return script


def frozen_children(parent: int) -> list[int]:
    """Stopped (state T) descendants of ``parent``: the render stage runs ffmpeg from the daemon,
    or from a host process the daemon started (host_workers, recond.executors.local)."""
    processes = {}
    for entry in Path("/proc").iterdir():
        try:
            fields = dict(line.split(":\t", 1) for line in (entry / "status").read_text().splitlines()
                          if ":\t" in line)
        except (OSError, ValueError):
            continue
        if entry.name.isdigit():
            processes[int(entry.name)] = (int(fields.get("PPid", "0").strip() or 0), fields.get("State", ""))

    def descends(pid: int) -> bool:
        seen = set()
        while pid and pid not in seen:
            seen.add(pid)
            pid = processes.get(pid, (0, ""))[0]
            if pid == parent:
                return True
        return False

    return [pid for pid, (_, state) in processes.items() if state.startswith("T") and descends(pid)]


def test_frozen_ffmpeg_is_flagged_killed_at_the_stage_limit_and_the_job_retried(
        tmp_path: Path, tiny_model_dir: Path, shared_dir: Path) -> None:
    # render usually takes 2 s (the default history): flagged past 10 s (the floor), killed at 15 s.
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples",
                                stage_limit_factor=1.0, stage_limit_floor_s=15.0)
    try:
        installation.start(env={"IMAGEIO_FFMPEG_EXE": str(freezing_ffmpeg(tmp_path))})
        installation.drop_like_a_share("chair.png")
        wait_until(lambda: frozen_children(installation.process.pid), 300, installation)
        frozen = frozen_children(installation.process.pid)
        status = installation.wait(lambda s: any(job["stage_overdue"] for job in s["running"]), timeout=15)
        assert [job["stage"] for job in status["running"] if job["stage_overdue"]] == ["render"]
        assert "the render stage has run" in installation.reconctl("status").stdout
        status = installation.wait(lambda s: s["counts"]["done"] == 1, timeout=120)
        assert not Path(f"/proc/{frozen[0]}").exists() or frozen[0] not in frozen_children(installation.process.pid)
        retried = [e for e in log_events(installation) if e["event"] == "job requeued: a stage ran past its time limit"]
        assert len(retried) == 1 and "ffmpeg ran" in retried[0]["error"], retried
        job = json.loads(installation.reconctl("show", str(status["recent"][0]["id"]), "--json").stdout)
        assert job["attempts"] == 2 and job["error"] is None
        assert installation.stop() == 0
        assert_each_in_one_place([(shared_dir / "examples" / "chair.png").read_bytes()],
                                 installation.inbox, installation.outbox)
    finally:
        installation.stop()


def test_sigterm_ends_a_frozen_stage_at_once_and_keeps_the_job(
        tmp_path: Path, tiny_model_dir: Path, shared_dir: Path) -> None:
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples")  # limit: 120 s
    try:
        installation.start(env={"IMAGEIO_FFMPEG_EXE": str(freezing_ffmpeg(tmp_path))})
        installation.drop_like_a_share("robot.png")
        wait_until(lambda: frozen_children(installation.process.pid), 300, installation)
        frozen = frozen_children(installation.process.pid)
        started = time.monotonic()
        installation.process.send_signal(signal.SIGTERM)
        assert installation.process.wait(30) == 0
        print(f"a frozen render stage stopped {time.monotonic() - started:.1f} s after SIGTERM")
        assert time.monotonic() - started < 10  # TimeoutStopSec is 180
        # The child is gone with it: killed with its host process's group (host_workers), then
        # reaped by init, which takes a moment after the daemon exits.
        wait_until(lambda: not Path(f"/proc/{frozen[0]}").exists(), 5)
        status = installation.status()
        assert status["counts"]["queued"] == 1 and status["counts"]["failed"] == 0
        assert_each_in_one_place([(shared_dir / "examples" / "robot.png").read_bytes()],
                                 installation.inbox, installation.outbox)
    finally:
        installation.stop()


def test_once_reports_a_file_that_never_stops_changing_and_exits(tmp_path: Path, tiny_model_dir: Path,
                                                                 shared_dir: Path) -> None:
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples")
    shutil.copy(shared_dir / "examples" / "chair.png", installation.inbox / "chair.png")
    growing, writing = installation.inbox / "growing.png", threading.Event()

    def keep_writing() -> None:
        with growing.open("ab") as stream:
            while not writing.is_set():
                stream.write(b"x")
                stream.flush()
                time.sleep(0.1)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        started = time.monotonic()
        code = installation.start("--once").wait(400)
        print(f"--once exited after {time.monotonic() - started:.1f} s")
        assert code == 0, installation.stderr()
    finally:
        writing.set()
        writer.join()
    left = [e for e in log_events(installation) if e["event"].startswith("still changing")]
    assert [e["file"] for e in left] == ["growing.png"]
    status = installation.status()
    assert status["counts"]["done"] == 1 and status["counts"]["queued"] == 0
    assert_each_in_one_place([(shared_dir / "examples" / "chair.png").read_bytes(), growing.read_bytes()],
                             installation.inbox, installation.outbox)


def fill(folder: Path) -> Path:
    """Fill the filesystem holding ``folder`` to its last byte; returns the file doing it."""
    filler = folder / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(descriptor, b"\0" * chunk)
            except OSError:
                continue
    finally:
        os.close(descriptor)
    return filler


@pytest.mark.slow
def test_full_state_disk_keeps_every_result_strands_no_job_and_floods_no_log(
        tmp_path: Path, tiny_model_dir: Path, shared_dir: Path) -> None:
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples")
    installation.state.mkdir()
    names = ("chair.png", "robot.png", "flamingo.png")
    with mounted("-t", "tmpfs", "-o", "size=16m", "tmpfs", target=installation.state):
        try:
            installation.start()
            installation.drop_like_a_share("chair.png")
            installation.wait(lambda s: s["counts"]["done"] == 1, timeout=300)
            installation.drop_like_a_share("robot.png")
            installation.wait_for_stage(("export", "render"), timeout=300)
            filler = fill(installation.state)  # mid-job: its history, progress and outcome
            lines_before = installation.stderr_lines()
            installation.drop_like_a_share("flamingo.png")  # and a drop while full
            time.sleep(40)  # past STALE_HEARTBEAT_SECONDS, with the database unwritable
            status = installation.status()
            assert status["daemon"]["running"] and not status["daemon"]["unresponsive"], status
            assert "NOT RESPONDING" not in installation.reconctl("status").stdout
            flood = installation.stderr_lines() - lines_before
            print(f"stderr lines in 40 s of a full state disk: {flood}")
            assert flood < 300  # a few tracebacks, each error once a minute (it was 58,332 in 47 s)
            filler.unlink()
            installation.wait(lambda s: s["counts"]["done"] == 3, timeout=300)
            status = installation.status()
            assert status["counts"]["running"] == status["counts"]["queued"] == status["counts"]["failed"] == 0
            assert installation.stop() == 0
        finally:
            installation.stop()
    assert_each_in_one_place([(shared_dir / "examples" / name).read_bytes() for name in names],
                             installation.inbox, installation.outbox)
