"""The systemd watchdog ping and the liveness file, from a thread that never touches SQLite.

A daemon waiting on a database another process holds is alive, not hung, yet its main loop may
wait there longer than ``WatchdogSec=60`` (issue 18: a 94 s gap got it killed). This thread pings
while the main loop turns or while the store waits on another process's lock (a bounded wait),
and touches the liveness file (``Settings.heartbeat_path``, its mtime, which needs no free disk
space) so `reconctl status` tells a live daemon from a dead one when the database or a full
state disk keeps its heartbeat row from being written.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recond.logging import Repeats, get_logger
from recond.store import HEARTBEAT_SECONDS

# The main loop turns every second. Stalled this long while not waiting on the database, it is
# hung: the pings stop and systemd (WatchdogSec=60) restarts recond.
LOOP_STALL_SECONDS = 40.0

log = get_logger("recond.heartbeat")


class Heartbeat:
    """Pings ``notifier`` (sdnotify) every HEARTBEAT_SECONDS while the daemon lives."""

    def __init__(self, notifier: Any, liveness_file: Path, waiting_on_database: Callable[[], bool]) -> None:
        self.notifier = notifier
        self.liveness_file = liveness_file
        self.waiting_on_database = waiting_on_database
        self.status = "starting"
        self._ticked = time.monotonic()
        self._stopping = threading.Event()
        self._repeats = Repeats()
        self._thread = threading.Thread(target=self._run, name="recond-heartbeat", daemon=True)

    def start(self) -> None:
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=HEARTBEAT_SECONDS)

    def tick(self, status: str | None = None) -> None:
        """The main loop turned (with a new STATUS line for systemd, if given)."""
        self._ticked = time.monotonic()
        if status is not None:
            self.status = status

    def _run(self) -> None:
        while not self._stopping.wait(HEARTBEAT_SECONDS):
            if time.monotonic() - self._ticked < LOOP_STALL_SECONDS or self.waiting_on_database():
                self._beat()
            else:
                self._repeats.log(log.error, "main loop stalled; no watchdog ping, so systemd restarts recond",
                                  stalled_s=round(time.monotonic() - self._ticked))

    def _beat(self) -> None:
        self.notifier.notify(f"WATCHDOG=1\nSTATUS={self.status}")
        try:
            os.utime(self.liveness_file)
        except FileNotFoundError:
            self._create_liveness_file()
        except OSError as error:
            self._repeats.log(log.warning, "liveness file not touched", file=str(self.liveness_file),
                              error=str(error))

    def _create_liveness_file(self) -> None:
        try:
            self.liveness_file.touch()
        except OSError as error:
            self._repeats.log(log.warning, "liveness file not created", file=str(self.liveness_file),
                              error=str(error))


def liveness_age(liveness_file: Path) -> float | None:
    """Seconds since the daemon last touched its liveness file (None: no such file)."""
    try:
        return time.time() - liveness_file.stat().st_mtime
    except OSError:
        return None
