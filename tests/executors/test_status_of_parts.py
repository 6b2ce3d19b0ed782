"""Issue 27 (and 26's "status cries wolf"): what status says about a job's parts is true.

A real worker on a real job database, `status_report` read while the jobs run, the stand-in
pipeline (test_worker.py) in the worker thread (host_workers = 0) or beside a real host process
(host_workers = 1), and a real kill -9 of a process running a worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from helpers.places import assert_each_in_one_place

from helpers.settings import settings_for

from helpers.waiting import wait_for
from helpers.paths import REPO
from helpers.queueing import queue_file
from helpers.stand_in import DEVICE_STAGES, HOST_STAGES, StandInPipeline

from recond.pipeline.progress import STAGE_HISTORY_NAME, STAGES, WAITING_FOR_HOST
from recond.status import status_report
from recond.store import DONE, QUEUED, RUNNING, Store
from recond.worker import Worker


def watch_status(settings: Any, until: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    """status_report, polled until ``until(report)``; every report seen."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(status_report(settings))
        if until(seen[-1]):
            return seen
        time.sleep(0.03)
    raise AssertionError(f"status never showed it; last {seen[-1]}")


def test_a_normal_job_shows_no_overdue_warning_and_its_device_worker_busy(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    # Every stage usually takes 10 ms; this run's take 0.25 s each: slower, yet nothing stuck.
    (settings.state_dir / STAGE_HISTORY_NAME).write_text(json.dumps({stage: 0.01 for stage in STAGES}))
    store = Store(settings.db_path)
    store.daemon_started(os.getpid())
    queue_file(settings, store, "a.png", b"a picture")
    worker = Worker(settings, store, pipeline_factory=lambda s: StandInPipeline(stage_seconds=0.25))
    worker.start()
    try:
        seen = watch_status(settings, lambda report: report["counts"]["done"] == 1)
    finally:
        worker.stop()
    running = [job for report in seen for job in report["running"]]
    assert running and not any(job["stage_overdue"] for job in running)
    assert {job["stage"] for job in running} >= {"reconstruct", "grid"}
    on_device = [report["daemon"]["workers"] for report in seen
                 if any(job["stage"] == "reconstruct" for job in report["running"])]
    assert on_device and all(workers[0]["busy"] and workers[0]["job_id"] == 1 for workers in on_device)


class ThreadCountingPipeline(StandInPipeline):
    """The stand-in, noting the torch threads its device part gets (where a model would run)."""

    def __init__(self, stage_seconds: float) -> None:
        super().__init__(stage_seconds=stage_seconds)
        self.torch_threads: list[int] = []

    def device_part(self, source: Any, job: Any = None, report: Any = None) -> Any:
        import torch

        self.torch_threads.append(torch.get_num_threads())
        return super().device_part(source, job, report)


def test_a_job_waiting_for_a_host_process_says_so_and_torch_threads_come_back(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    settings = settings_for(tmp_path, host_workers=1)
    store = Store(settings.db_path)
    store.daemon_started(os.getpid())
    for name in ("a.png", "b.png", "c.png"):
        queue_file(settings, store, name, f"picture {name}".encode())
    pipeline = ThreadCountingPipeline(stage_seconds=0.4)
    worker = Worker(settings, store, pipeline_factory=lambda s: pipeline)
    worker.start()
    try:
        seen = watch_status(settings, lambda report: report["counts"]["done"] == 3, timeout=90)
        waiting = [job for report in seen for job in report["running"] if job["stage"] == WAITING_FOR_HOST]
        assert waiting and not any(job["stage_overdue"] for job in waiting)
        assert pipeline.torch_threads == [max(1, cpus - 1)] * 3  # a core left to the host process
        worker.reload(settings_for(tmp_path, host_workers=0))  # a SIGHUP from 1 to 0
        queue_file(settings, store, "d.png", b"picture d.png")
        wait_for(lambda: store.counts()["done"] == 4, timeout=60)
        assert pipeline.torch_threads[-1] == cpus  # every core again, with no host process beside it
    finally:
        worker.stop()


KILLED_BESIDE_A_HOST_PROCESS = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from helpers.settings import settings_for
    from pathlib import Path
    from recond.store import Store
    from recond.worker import Worker
    from helpers.stand_in import StandInPipeline

    settings = settings_for(Path(sys.argv[1]), host_workers=1, max_attempts=1)
    worker = Worker(settings, Store(settings.db_path),
                    pipeline_factory=lambda s: StandInPipeline(stage_seconds=float(sys.argv[3])))
    worker.start()
    time.sleep(600)
""")


def test_a_daemon_kill_9_charges_only_the_job_whose_part_ran_inside_it(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, host_workers=1, max_attempts=1)
    store = Store(settings.db_path)
    pictures = {name: f"picture {name}".encode() for name in ("a.png", "b.png")}
    hosted, on_device = (queue_file(settings, store, name, data) for name, data in pictures.items())
    daemon = subprocess.Popen([sys.executable, "-c", KILLED_BESIDE_A_HOST_PROCESS, str(tmp_path),
                               str(REPO / "tests"), "2.0"], cwd=REPO)

    def both_parts_running() -> bool:
        a, b = store.get(hosted), store.get(on_device)
        return (a.part_in_daemon == 0 and a.stage in HOST_STAGES
                and b.state == RUNNING and b.part_in_daemon == 1 and b.stage in DEVICE_STAGES)

    try:
        # a.png in its host part (a host process), b.png in its device part (the daemon's thread)
        wait_for(both_parts_running, timeout=90)
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
    finally:
        daemon.kill()
    assert store.get(on_device).part_in_daemon == 1
    worker = Worker(settings, store, pipeline_factory=lambda s: StandInPipeline())
    worker.recover()  # max_attempts = 1: the job that may have crashed the daemon fails ...
    assert store.get(hosted).state == QUEUED and store.get(hosted).attempts == 0  # ... the other does not
    assert store.get(on_device).state == "failed" and "stopped unexpectedly" in store.get(on_device).error
    try:
        worker.process(store.claim_next())
    finally:
        worker.close()  # its host process, which would otherwise outlive the test
    assert store.get(hosted).state == DONE
    places = assert_each_in_one_place(list(pictures.values()), settings.inbox, settings.outbox)
    assert places[0].startswith("result") and places[1].startswith("failed")
