"""Issue 27, item 2: one inbox has one daemon, named by the lease file in the inbox.

Real files in a real folder, real processes for the holders (a live one and a killed one), and a
real thread refreshing a lease "on another host" while a newcomer watches it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.privileged import mounted

from recond.shares.lease import LEASE_NAME, LEASE_SECONDS, InboxLease, InboxTaken, LeaseLost


def foreign_lease(inbox: Path, host: str, pid: int, refreshed_at: float, token: str = "t" * 32) -> None:
    """A lease as another daemon writes it (another host, or another state dir here)."""
    record = {"host": host, "pid": pid, "state_dir": "/srv/other/state", "token": token,
              "refreshed_at": refreshed_at}
    (inbox / LEASE_NAME).write_text(json.dumps(record) + "\n")


def test_a_second_daemon_is_refused_with_the_first_ones_host_pid_and_state_dir(tmp_path: Path) -> None:
    first = InboxLease(tmp_path, tmp_path / "state-one")
    first.acquire()
    try:
        with pytest.raises(InboxTaken) as refused:
            InboxLease(tmp_path, tmp_path / "state-two").acquire()
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message and str(tmp_path / "state-one") in message
        assert f"host {first.mine.host}" in message and "executor = \"ray\"" in message
        first.raise_if_lost()  # the refused one took nothing
    finally:
        first.release()
    assert not (tmp_path / LEASE_NAME).exists()  # a clean stop frees the inbox at once
    InboxLease(tmp_path, tmp_path / "state-two").acquire()


def test_the_lease_of_a_killed_daemon_on_this_host_is_taken_at_once(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lease = InboxLease(tmp_path, tmp_path / "state")
    foreign_lease(tmp_path, lease.mine.host, gone.pid, time.time())
    with pytest.raises(InboxTaken):  # alive: refused
        lease.acquire()
    gone.kill()
    gone.wait()
    started = time.monotonic()
    lease.acquire()
    assert time.monotonic() - started < 1.0
    assert json.loads((tmp_path / LEASE_NAME).read_text())["token"] == lease.mine.token
    lease.release()


def test_a_stale_lease_of_another_host_is_taken_only_once_it_stands_still(tmp_path: Path) -> None:
    old = time.time() - 2 * LEASE_SECONDS  # stale by our clock: that host's clock may be behind
    foreign_lease(tmp_path, "nas-client-2", 4242, old)
    stop = threading.Event()

    def refresh_like_a_live_daemon() -> None:
        beat = 0
        while not stop.wait(0.05):
            beat += 1
            foreign_lease(tmp_path, "nas-client-2", 4242, old + beat)

    refresher = threading.Thread(target=refresh_like_a_live_daemon)
    refresher.start()
    try:
        with pytest.raises(InboxTaken, match="host nas-client-2, pid 4242"):
            InboxLease(tmp_path, tmp_path / "state", still_seconds=0.3).acquire()
    finally:
        stop.set()
        refresher.join()
    lease = InboxLease(tmp_path, tmp_path / "state", still_seconds=0.3)
    lease.acquire()  # nobody refreshes it now: the holder is gone
    lease.raise_if_lost()
    lease.release()


def test_a_lease_taken_over_stops_this_daemon_from_publishing(tmp_path: Path) -> None:
    lease = InboxLease(tmp_path, tmp_path / "state")
    lease.acquire()
    foreign_lease(tmp_path, "nas-client-2", 4242, time.time())
    with pytest.raises(LeaseLost, match="taken over"):
        lease.raise_if_lost()
    assert lease.lost and "nas-client-2" in lease.lost
    lease.release()
    assert json.loads((tmp_path / LEASE_NAME).read_text())["host"] == "nas-client-2"  # not ours to remove


def test_a_garbled_lease_is_no_holder_forever(tmp_path: Path) -> None:
    (tmp_path / LEASE_NAME).write_text("{\"host\": ")  # cut short by a full share
    lease = InboxLease(tmp_path, tmp_path / "state", still_seconds=0.1)
    lease.acquire()
    lease.raise_if_lost()
    lease.release()


def test_a_read_only_inbox_runs_without_a_lease(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with mounted("--bind", "-o", "ro", str(inbox), target=inbox):  # a read-only share
        lease = InboxLease(inbox, tmp_path / "state")
        lease.acquire()
        assert lease.unwritable and not (inbox / LEASE_NAME).exists()
        lease.raise_if_lost()
        lease.release()
