"""A hard stop for every host stage (recond/executors/host_pool.py, issue 22): real host
processes, a real job database and real signals.

A stage stuck in a call that never returns (here: a stand-in host part that sleeps, as a C call
looks from outside) is stopped at its limit with host_workers = 0 too: its process is killed, a
fresh one takes its place, the job is retried and then failed with the stage and the limit in
its reason. A host process frozen with SIGSTOP counts as stuck: replaced, its job retried and
published once, the other pictures done, and status says what happened. SIGTERM while a stage
is stuck ends the daemon at once, and every picture lies in exactly one place.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers.places import assert_each_in_one_place, assert_in_one_place
from helpers.settings import settings_for
from helpers.waiting import wait_for
from helpers.installation import Installation, SLOWER_JOB, counts
from helpers.daemon_rows import busy_host_workers, daemon_row, pid_exists

from recond.config import DTypeChoice
from recond.outbox.publish import STAGING_SUFFIX
from recond.pipeline.contract import SourcePicture
from recond.store import DONE, FAILED, QUEUED, Store
from recond.worker import Worker

STUCK_FOR_SECONDS = 600.0


@dataclass(frozen=True)
class StuckHandoff:
    source_name: str


def stuck_host_part(handoff: StuckHandoff, job: Any, result_dir: Path, report: Any = None,
                    expected: Any = None) -> Any:
    """Starts the mesh stage and never returns (a simplification of a noisy surface, say)."""
    report("mesh", 0.1)
    time.sleep(STUCK_FOR_SECONDS)


class StuckPipeline:
    """A warm pipeline whose device part is instant and whose host part hangs (no GPU, no model:
    only the process that runs the host part is under test)."""

    model_id, device, background_method = "stand-in", "cpu", "none"
    dtype = DTypeChoice("float32", "stand-in")
    host_part = staticmethod(stuck_host_part)

    def device_part(self, source: SourcePicture, job: Any = None, report: Any = None) -> StuckHandoff:
        return StuckHandoff(source.name)

    def run(self, *arguments: Any, **options: Any) -> Any:
        raise AssertionError("the worker runs the two parts")


def test_a_stuck_stage_with_host_workers_0_is_stopped_at_its_limit_then_fails(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, host_workers=0, isolate_host_part=True, max_attempts=2,
                            stage_limit_factor=1.0, stage_limit_floor_s=1.0)
    store = Store(settings.db_path)
    store.daemon_started(os.getpid())
    (settings.inbox / "fog.png").write_bytes(b"a picture of fog")
    job, _ = store.enqueue("fog.png", hashlib.sha256(b"a picture of fog").hexdigest(), 16,
                           "20260101-000000_fog")
    worker = Worker(settings, store, pipeline_factory=lambda s: StuckPipeline())
    worker.start()
    try:
        failed = wait_for(lambda: (found := store.get(job.id)) and found.state == FAILED and found, timeout=180)
    finally:
        worker.stop(30)
    assert failed.attempts == 2  # stopped twice: retried once, then failed
    assert "the mesh stage ran" in failed.error and "past the stage's limit of 1 s" in failed.error
    assert "a fresh host process" in failed.error
    assert assert_in_one_place(b"a picture of fog", settings.inbox, settings.outbox).startswith("failed")
    stops = (store.daemon_state() or {})["host_stops"]
    assert [stop["job_id"] for stop in stops] == [job.id, job.id] and all(stop["stage"] == "mesh" for stop in stops)
    assert stops[0]["fresh_pid"] != stops[0]["pid"] and stops[1]["pid"] == stops[0]["fresh_pid"]
    for stop in stops:
        assert not pid_exists(stop["pid"])  # the stuck processes are gone, not left sleeping


# Host stages of the tiny job take a few seconds on a busy 2-core machine; 15 s each leaves room.
SHORT_LIMITS = {"stage_limit_factor": 1.0, "stage_limit_floor_s": 15.0}


@pytest.fixture
def one_host(tmp_path: Path, tiny_model_dir: Path, shared_dir: Path) -> Any:
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples", host_workers=1,
                                **SHORT_LIMITS, **SLOWER_JOB)
    yield installation
    installation.stop()


def test_a_host_process_frozen_with_sigstop_is_replaced_and_its_job_published_once(one_host: Installation) -> None:
    one_host.start()
    for name in ("robot.png", "flamingo.png"):
        one_host.drop_like_a_share(name)
    # Frozen in a stage only the host process reports: its imports are done, so its stage is held
    # to the 15 s limit, not to the limit plus a starting process's allowance (138 s in all).
    one_host.wait_for_stage(("texture", "export", "render"), timeout=120)
    victim = busy_host_workers(one_host)[0]
    os.kill(victim["pid"], signal.SIGSTOP)
    status = one_host.wait(lambda s: counts(s)["done"] == 2, timeout=240)
    assert counts(status)["failed"] == counts(status)["queued"] == counts(status)["running"] == 0
    jobs = {job["id"]: json.loads(one_host.reconctl("show", str(job["id"]), "--json").stdout)
            for job in status["recent"]}
    assert jobs[victim["job_id"]]["attempts"] == 2  # the frozen run, then the one that published
    assert [job["attempts"] for job_id, job in jobs.items() if job_id != victim["job_id"]] == [1]
    folders = one_host.result_folders()
    assert len(folders) == 2 and not [folder for folder in folders if folder.name.endswith(STAGING_SUFFIX)]
    assert_each_in_one_place([(one_host.examples / name).read_bytes() for name in ("robot.png", "flamingo.png")],
                             one_host.inbox, one_host.outbox)
    stop = status["daemon"]["host_stops"][0]
    assert (stop["job_id"], stop["pid"]) == (victim["job_id"], victim["pid"])
    assert stop["stage"] in ("mesh", "texture", "export", "render", "viewer", "record")
    assert stop["seconds"] > stop["limit_s"] == 15.0 and stop["fresh_pid"] not in (None, victim["pid"])
    assert not pid_exists(victim["pid"])
    shown = one_host.reconctl("status").stdout
    assert f"stopped: #{victim['job_id']} " in shown and "a fresh one" in shown
    one_host.stderr()  # flushes the log
    log = (one_host.root / "daemon.stderr").read_text(errors="replace")
    assert "host process stopped: a stage ran past its limit; a fresh one took its place" in log
    assert f"job={victim['job_id']}" in log.split("host process stopped")[1].splitlines()[0]


def test_sigterm_while_a_stage_is_stuck_ends_the_daemon_and_loses_nothing(
        tmp_path: Path, tiny_model_dir: Path, shared_dir: Path) -> None:
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples", host_workers=0, **SLOWER_JOB)
    try:
        installation.start()
        installation.drop_like_a_share("robot.png")
        installation.drop_like_a_share("flamingo.png")
        host = wait_for(lambda: busy_host_workers(installation), timeout=120)[0]
        os.kill(host["pid"], signal.SIGSTOP)  # the host part's stage is stuck from here on
        started = time.monotonic()
        assert installation.stop() == 0  # Installation.stop waits 60 s at most
        print(f"SIGTERM to exit with a stuck stage: {time.monotonic() - started:.1f} s")
        assert not pid_exists(host["pid"])
        status = installation.status()
        assert counts(status)["running"] == counts(status)["failed"] == 0
        job = json.loads(installation.reconctl("show", str(host["job_id"]), "--json").stdout)
        assert job["state"] in (QUEUED, DONE)
        if job["state"] == QUEUED:
            assert job["attempts"] == 0  # a clean stop is not the job's crash
        assert not [folder for folder in installation.outbox.iterdir() if folder.name.endswith(STAGING_SUFFIX)]
        assert_each_in_one_place([(installation.examples / name).read_bytes() for name in ("robot.png", "flamingo.png")],
                                 installation.inbox, installation.outbox)
        assert json.loads(daemon_row(installation).get("workers") or "[]") is not None
    finally:
        installation.stop()
