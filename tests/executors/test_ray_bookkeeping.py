"""The Ray executor's own bookkeeping, without a cluster: which process a host task runs in, and
when a silent cluster counts as lost. Both were found only under load in the full suite (issue 26);
here each is driven directly on a real RayExecutor, whose constructor joins nothing. No Ray call is
made: the parts are device parts (cancelling one asks nothing of Ray) or only read reports.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

from recond.config import Settings  # noqa: E402 - after the skip: the module imports ray
from recond.executors import JobCancelled  # noqa: E402
from recond.executors.ray import (  # noqa: E402
    CLUSTER_LOST_SECONDS,
    PROGRESS_POLL_SECONDS,
    RayExecutor,
    RemotePart,
)
from recond.pipeline.progress import HOST_STAGES  # noqa: E402
from recond.pipeline.warm import build_pipeline  # noqa: E402 - the daemon's; never called here


def executor(tmp_path: Path, progress: list | None = None) -> RayExecutor:
    settings = Settings(executor="ray", ray_address="127.0.0.1:9", state_dir=tmp_path)
    sink = progress.append if progress is not None else (lambda report: None)
    return RayExecutor(settings, pipeline_factory=build_pipeline, on_progress=sink)


def test_a_host_task_takes_its_pid_from_host_stages_only(tmp_path):
    progress: list = []
    ray_executor = executor(tmp_path, progress)
    part = RemotePart(7, "host", ref=None, future=Future())
    ray_executor._parts[7] = part
    actor_pid, host_pid = 111, 222
    # The device actor's last report of job 7 can reach the board after its host task began.
    ray_executor._take([(7, "grid", 1.0, "node-a", actor_pid)])
    assert part.pid == 0 and not part.reported
    ray_executor._take([(7, HOST_STAGES[0], 0.1, "node-a", host_pid)])
    assert part.pid == host_pid and part.stage == HOST_STAGES[0] and part.reported
    ray_executor._take([(7, "grid", 1.0, "node-a", actor_pid), (7, HOST_STAGES[1], 0.5, "node-b", host_pid)])
    assert part.pid == host_pid and part.stage == HOST_STAGES[1] and part.node == "node-b"
    assert [report.stage for report in progress] == ["grid", HOST_STAGES[0], "grid", HOST_STAGES[1]]


def test_a_cluster_silent_past_the_limit_is_lost_even_while_a_question_hangs(tmp_path):
    ray_executor = executor(tmp_path)
    running = RemotePart(3, "device", ref=None, future=Future())
    ray_executor._parts[3] = running
    # The poller is stuck inside a call to Ray (it never returns): only the clock moves.
    ray_executor._answered_at = time.monotonic() - CLUSTER_LOST_SECONDS - 10
    started = time.monotonic()
    ray_executor._watch_silence()
    assert time.monotonic() - started < 5
    assert ray_executor.lost is not None and "has not answered for" in ray_executor.lost
    with pytest.raises(JobCancelled):
        running.future.result(timeout=0)
    first = ray_executor.lost
    ray_executor._cluster_lost("said again by the poller")
    assert ray_executor.lost == first  # said once


def test_a_cluster_that_answered_lately_is_not_lost(tmp_path):
    ray_executor = executor(tmp_path)
    ray_executor._answered_at = time.monotonic()
    watch = threading.Thread(target=ray_executor._watch_silence)
    watch.start()
    time.sleep(4 * PROGRESS_POLL_SECONDS)  # a few looks, all within the limit
    ray_executor._closed.set()
    watch.join(5)
    assert not watch.is_alive() and ray_executor.lost is None


def crashed() -> Future:
    from ray.exceptions import WorkerCrashedError

    done: Future = Future()
    done.set_exception(WorkerCrashedError())
    return done


def test_a_retry_given_the_worker_just_stopped_is_requeued_uncharged_and_a_later_crash_is_not(tmp_path):
    ray_executor = executor(tmp_path)
    ray_executor._last_stop = time.monotonic()  # a host task was just stopped at its limit
    retry = RemotePart(5, "host", ref=None, future=Future())
    ray_executor._host_done(None, retry, crashed())  # type: ignore[arg-type]  # only a success reads the task
    with pytest.raises(JobCancelled):
        retry.future.result(timeout=0)
    begun = RemotePart(6, "host", ref=None, future=Future(), reported=True)  # it had started a stage
    ray_executor._host_done(None, begun, crashed())  # type: ignore[arg-type]
    assert not isinstance(begun.future.exception(timeout=0), JobCancelled)
    ray_executor._last_stop = time.monotonic() - 60
    later = RemotePart(7, "host", ref=None, future=Future())
    ray_executor._host_done(None, later, crashed())  # type: ignore[arg-type]
    assert not isinstance(later.future.exception(timeout=0), JobCancelled)
