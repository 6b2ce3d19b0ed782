"""The Ray cluster lost under a running daemon (issue 27, item 4): kill -9 of the raylet mid-queue.
Status says within seconds that the cluster is gone, the daemon exits cleanly (status 1 for
systemd's Restart=on-failure, no abort in Ray's C++ code), the jobs in flight are back in the
queue without an attempt counted, and once a cluster is back a new run publishes every picture
exactly once. The cluster is this module's own (it does not survive the test).
"""

from __future__ import annotations

import os
import signal
import time

from helpers.places import assert_in_one_place
from helpers.ray_cluster import start_documented_cluster, stop_cluster
from helpers.ray_jobs import (
    SLOW_DEVICE_PART,
    all_done,
    assert_each_published_once,
    daemon_workers,
    drop,
    job_rows,
)

SECONDS_TO_SEE = 20.0  # the daemon needs 5 s without an answer; polling reconctl adds its own
SECONDS_TO_EXIT = 30.0


def seen_lost(setup, timeout: float) -> dict:
    """The first status that says the cluster is lost (the model missing, its detail naming the
    silence) or that the daemon is down. Ray's core may end the daemon at any moment here, also
    between two polls: that is one of the outcomes, not a failure of the wait."""
    deadline = time.monotonic() + timeout
    while True:
        status = setup.report()
        daemon = status["daemon"]
        if not daemon["running"] or (daemon["model"] == "missing"
                                     and "has not answered" in (daemon["model_detail"] or "")):
            return status
        assert time.monotonic() < deadline, setup.stderr()
        time.sleep(0.2)


def test_raylet_killed_mid_queue_is_seen_and_nothing_is_lost(on_ray, ray_cluster):
    setup = on_ray(**SLOW_DEVICE_PART)
    setup.start()
    dropped = drop(setup, ("chair.png", "robot.png", "horse.png", "flamingo.png"))
    deadline = time.monotonic() + 120
    while not any(worker["busy"] for worker in daemon_workers(setup)):
        assert time.monotonic() < deadline, setup.stderr()
        time.sleep(0.02)
    os.kill(ray_cluster.raylet(), signal.SIGKILL)
    killed = time.monotonic()

    # Two outcomes, both measured here: recond sees the cluster silent, says so and waits for
    # it; or Ray's core, which runs inside the daemon, ends the process first when it loses its
    # raylet (exit status 1, for systemd to restart; `reconctl status` then says "down").
    status = seen_lost(setup, timeout=SECONDS_TO_SEE + 60)
    seen = time.monotonic() - killed
    assert setup.process is not None
    by_recond = status["daemon"]["running"]
    print(f"cluster loss seen after {seen:.1f} s: "
          f"{status['daemon']['model_detail'] if by_recond else 'Ray ended the process'}")
    assert seen < SECONDS_TO_SEE, f"{seen:.1f} s\n{setup.stderr()}"
    if by_recond:
        assert status["daemon"]["model"] == "missing" and "jobs wait queued" in status["daemon"]["model_detail"]
        time.sleep(2)  # the jobs in flight went back to the queue, uncharged
        rows = job_rows(setup)
        assert not [row for row in rows if row["state"] == "running"]
        assert all(row["attempts"] == 0 for row in rows if row["state"] == "queued")
    else:
        assert setup.process.wait(SECONDS_TO_EXIT) == 1, setup.stderr()  # not SIGABRT (-6)
    for data in dropped.values():
        assert_in_one_place(data, setup.inbox, setup.outbox)

    # Ray comes back at the same address (a new head: the old one ended with its raylet).
    stop_cluster(ray_cluster.head, ray_cluster.temp)
    again = start_documented_cluster(ray_cluster.home, ray_cluster.ports)
    setup.cluster = again
    try:
        if not by_recond:  # as systemd's Restart=on-failure would
            setup.start()
        setup.wait(all_done(len(dropped)), timeout=240)
        assert_each_published_once(setup, dropped)
        if by_recond:
            assert "starting afresh" in (setup.root / "daemon.stderr").read_text()
            assert setup.process.poll() is None  # the same process, started afresh in place
        assert setup.stop() == 0
    finally:
        stop_cluster(again.head, again.temp)
