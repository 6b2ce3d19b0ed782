"""The inbox's inotify observer, made to tell what watchdog handles quietly.

watchdog 7 rebuilds its watches when the kernel's event queue overflows (IN_Q_OVERFLOW) but
tells its handlers nothing, so the files whose events were dropped would wait for the next
rescan; and past the inotify watch limit (ENOSPC) it skips a folder without a word
(watchdog/observers/inotify.py, InotifyWatchGroup._add_callback). Both go through the
inotify instance, which watchdog lets an observer supply, so ours reports them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import CallbackId, InotifyEvent, InotifyFD, Mask, WatchCallback, WatchDescriptor


class _ReportingInotifyFD(InotifyFD):
    """One inotify instance that calls ``on_overflow()`` when the kernel dropped events and
    ``on_unwatched(folder)`` when a folder could not be watched for the watch limit."""

    def __init__(self, on_overflow: Callable[[], None], on_unwatched: Callable[[Path], None]) -> None:
        super().__init__()
        self.on_overflow = on_overflow
        self.on_unwatched = on_unwatched

    def handle_event(self, event: InotifyEvent) -> None:
        super().handle_event(event)  # watchdog re-adds its watches first, so the rescan sees new folders
        if event.is_queue_overflow:
            self.on_overflow()

    def add_callback(self, path: bytes, mask: Mask, callback: WatchCallback,
                     id_: CallbackId) -> WatchDescriptor:
        try:
            return super().add_callback(path, mask, callback, id_)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                self.on_unwatched(Path(os.fsdecode(path)))
            raise


class ReportingInotifyObserver(BaseObserver):
    """watchdog's InotifyObserver with a reporting inotify instance (see the module docstring)."""

    def __init__(self, on_overflow: Callable[[], None], on_unwatched: Callable[[Path], None]) -> None:
        self._inotify_fd = _ReportingInotifyFD(on_overflow, on_unwatched)
        self._inotify_fd.start()
        super().__init__(InotifyEmitter, inotify_fd=self._inotify_fd)

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._inotify_fd.stop()
        self._inotify_fd.join()
