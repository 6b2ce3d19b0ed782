"""The heartbeat thread keeps systemd's watchdog fed and status answering while the daemon's main
loop waits on a database another process holds."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from recond.config import load_settings
from recond.status import status_report
from recond.store import STALE_HEARTBEAT_SECONDS

from helpers.paths import REPO
from helpers.installation import Installation, queued, wait_until, wait_until_watching, without_model
from helpers.places import assert_each_in_one_place


class NotifySocket:
    """A real NOTIFY_SOCKET (what systemd gives a Type=notify service): the datagrams recond
    sends, with the time each arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append((time.monotonic(), self.socket.recv(4096).decode()))
            except TimeoutError:
                continue

    def pings(self, since: float = 0.0) -> list[float]:
        return [at for at, text in self.messages if "WATCHDOG=1" in text and at >= since]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


# The lock is held longer than the service's WatchdogSec: a daemon whose watchdog pings waited on
# it would be killed within that time. It is also past STALE_HEARTBEAT_SECONDS, after which status
# must still answer from the liveness file (checked 45 s in). It was 90 s: 25 s more of the same.
WATCHDOG_SEC = int(re.search(r"^WatchdogSec=(\d+)$", (REPO / "systemd" / "recond.service").read_text(), re.M)[1])
HOLD_SECONDS = WATCHDOG_SEC + 5
assert HOLD_SECONDS > 45 + 10 > STALE_HEARTBEAT_SECONDS


def reconctl_status_seconds(installation: Installation) -> tuple[float, dict]:
    started = time.monotonic()
    status = installation.status()
    return time.monotonic() - started, status


@pytest.mark.slow
def test_database_held_past_watchdog_sec_by_another_process_keeps_the_watchdog_fed_and_status_answering(
        tmp_path: Path) -> None:
    installation = without_model(tmp_path)
    notify = NotifySocket(tmp_path / "notify")
    holder = None
    try:
        installation.start(env={"NOTIFY_SOCKET": str(notify.path)})
        wait_until_watching(installation)
        wait_until(lambda: any("READY=1" in text for _, text in notify.messages), 10)
        holder = subprocess.Popen([sys.executable, "-c", (
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            f"db.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep({HOLD_SECONDS})\n"
            "db.execute('ROLLBACK')\n"), str(installation.state / "recond.db")],
            stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        held_at = time.monotonic()
        picture = b"dropped while the database was held"
        (installation.inbox / "mug.png").write_bytes(picture)
        time.sleep(15)
        seconds, status = reconctl_status_seconds(installation)
        assert status["database_busy"] and status["daemon"]["running"], status
        text = installation.reconctl("status").stdout
        assert "held by another process" in text and "NOT RESPONDING" not in text
        # Past STALE_HEARTBEAT_SECONDS without a heartbeat row: the liveness file still speaks.
        time.sleep(max(0.0, held_at + 45 - time.monotonic()))
        seconds, status = reconctl_status_seconds(installation)
        assert status["daemon"]["running"] and not status["daemon"]["unresponsive"], status
        print(f"reconctl status answered in {seconds:.2f} s (a whole python start included)")
        assert seconds < 5.0
        started = time.monotonic()
        status_report(load_settings(installation.config))
        assert time.monotonic() - started < 1.0  # the answer itself, without starting python
        holder.wait(120)
        released_at = time.monotonic()
        wait_until(lambda: queued(installation) == 1, 60, installation)
        pings = [held_at - 1, *notify.pings(since=held_at - 1), released_at]
        gaps = [later - earlier for earlier, later in zip(pings, pings[1:])]
        print(f"longest gap between watchdog pings while held: {max(gaps):.1f} s")
        assert max(gaps) < 15  # HEARTBEAT_SECONDS is 5; systemd's WatchdogSec is 60
        assert installation.stop() == 0
        assert_each_in_one_place([picture], installation.inbox, installation.outbox)
    finally:
        if holder and holder.poll() is None:
            holder.kill()
        installation.stop()
        notify.close()
