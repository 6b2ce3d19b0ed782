"""The inbox watcher: notices files (events, a startup scan, periodic rescans), waits until each
has stopped changing, and records it in the store as a job.

It only queues; the worker processes. Watchers on network shares die silently (the polling
emitter stops for good when the share vanishes, watchdog issue #1065), so ``supervise`` checks
the watcher and re-arms it. Only regular files are taken, read through ``recond.inbox.dropped``: a
FIFO, device or link never blocks or leaks through intake, an empty file is never settled, and
a copy of a picture is removed only once a published result holds its bytes.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from recond.config import Settings
from recond.inbox import dropped
from recond.inbox.failed import is_in_failed, remove_emptied_folders
from recond.inbox.set_aside import set_aside
from recond.inbox.watching import ReportingInotifyObserver
from recond.logging import Repeats, get_logger
from recond.names import display_name, result_name_for
from recond.outbox.publish import result_holds
from recond.pipeline.image import is_picture_name
from recond.shares.identity import FolderIdentity
from recond.store import ACTIVE, DONE, DUPLICATE, FAILED, Job, Store

IGNORED_NAMES = (".*", "~$*", "*.part", "*.crdownload", "*.tmp", "thumbs.db", "._*")
JUNK_FOLDERS = {"@eadir", ".stfolder", "__macosx", ".trashes", ".spotlight-v100"}
MAX_WARNINGS = 10

log = get_logger("recond.inbox.intake")


def is_ignored(relative: PurePosixPath) -> bool:
    """Temporary, hidden and system files, junk folders and inbox/failed/ are never jobs."""
    parts = relative.parts
    if is_in_failed(relative):
        return True
    if any(folder.lower() in JUNK_FOLDERS or folder.startswith(".") for folder in parts[:-1]):
        return True
    name = parts[-1].lower()  # Windows and macOS names are case-insensitive
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in IGNORED_NAMES)


@dataclass
class _Observation:
    size: int
    mtime_ns: int
    stable_since: float
    parked: bool = False  # empty, unreadable or not a file: watched, but not waited for by --once
    waiting_on: int | None = None  # a running job of this path: its new bytes wait for it to end
    touched: bool = False  # an event arrived since it was last checked
    unsettled_since: float = field(default_factory=time.monotonic)  # waiting to settle since


# The events intake asks watchdog for, as its event filter, which also narrows the inotify mask:
# by default the kernel reports every open and close of an inbox file, so each of recond's own
# reads (hashing, copying the source into its result) came back as two events for watchdog to
# parse and dispatch, and filled the kernel's queue. A folder's "modified" (a file made in it)
# needs no action either. Deletions stay in, though _Events ignores them: watchdog's recursive
# watch uses a deleted folder's event to forget its watch. 10,000 files dropped at once (tests/inbox/test_watching.py)
# were queued in 21 s instead of 38, for 23 daemon CPU-s instead of 43.
INTAKE_EVENTS = (FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
                 DirCreatedEvent, DirMovedEvent, DirDeletedEvent)


class _Events(FileSystemEventHandler):
    """Turns watchdog events into candidates; a file renamed into the inbox counts as new."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "deleted":  # opens and closes never arrive (INTAKE_EVENTS)
            return
        path = Path(os.fsdecode(event.dest_path if event.event_type == "moved" else event.src_path))
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                self.intake.scan(path)  # files moved in with a folder bring no events of their own
        else:
            self.intake.consider(path)


class Intake:
    """Watches ``settings.inbox`` and enqueues settled files; call ``supervise`` periodically."""

    def __init__(self, settings: Settings, store: Store,
                 on_enqueued: Callable[[Job], None] = lambda job: None) -> None:
        self.settings = settings
        self.inbox = settings.inbox.resolve()
        self.store = store
        self.on_enqueued = on_enqueued
        self.warnings: list[str] = []
        self.not_pictures: set[str] = set()  # inbox paths left alone, logged once
        self.identity = FolderIdentity("inbox", self.inbox, settings.state_dir,
                                       settings.adopt_changed_folders)
        self.paused: str | None = None  # why intake takes nothing now (the inbox is not the one)
        self._pending: dict[Path, _Observation] = {}
        self._reported: set[Path] = set()  # told once (log, status): unreadable, link, not a file
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._observer: BaseObserver | None = None
        self._armed_inode: tuple[int, int] | None = None
        self._last_scan = 0.0
        self._overflowed = threading.Event()  # the kernel dropped events: rescan at once
        self._unwatched: set[Path] = set()  # folders past the inotify watch limit: polled
        self._unwatched_lock = threading.Lock()
        self._polled: dict[Path, tuple[int, int]] = {}  # (size, mtime) of files in those folders
        self._last_poll = 0.0
        self._repeats = Repeats()
        self._settler = threading.Thread(target=self._settle_loop, name="recond-settle", daemon=True)

    # Life cycle.

    def start(self) -> None:
        self._settler.start()
        self.supervise()

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        self._disarm()
        self._settler.join(timeout=5)

    def idle(self, give_up_after: float | None = None) -> bool:
        """Nothing waiting to settle (used by ``recond --once``); with ``give_up_after``, a file
        still changing after that many seconds does not count (``still_changing`` names it)."""
        return all(seen.parked for seen in self._waiting_to_settle(give_up_after).values())

    def still_changing(self, give_up_after: float) -> list[str]:
        """Inbox files that have not settled within ``give_up_after`` seconds (shown names)."""
        everything = self._waiting_to_settle(None)
        patient = self._waiting_to_settle(give_up_after)
        return sorted(self._shown(path) for path, seen in everything.items()
                      if path not in patient and not seen.parked)

    def _waiting_to_settle(self, give_up_after: float | None) -> dict[Path, _Observation]:
        now = time.monotonic()
        with self._changed:
            return {path: seen for path, seen in self._pending.items()
                    if give_up_after is None or seen.waiting_on is not None
                    or now - seen.unsettled_since <= give_up_after}

    # Finding candidates.

    def scan(self, folder: Path | None = None) -> None:
        """Consider every file under ``folder`` (default: the whole inbox) without a job yet."""
        folder = folder or self.inbox
        active = self.store.active_sources()
        for path in self._files_under(folder):
            if self._relative(path).as_posix() not in active:
                self.consider(path)
        if folder == self.inbox:
            self._last_scan = time.monotonic()

    def _files_under(self, folder: Path) -> Iterator[Path]:
        for root, dirs, files in os.walk(folder):
            base = Path(root)
            # A folder is skipped when any file inside it would be (junk, hidden, failed/).
            dirs[:] = [d for d in dirs if not is_ignored(self._relative(base / d / "file"))]
            for name in files:
                yield base / name

    def consider(self, path: Path) -> None:
        """Start (or keep) watching one file until it has settled."""
        try:
            relative = self._relative(path)
        except ValueError:
            return
        if is_ignored(relative):
            return
        if not is_picture_name(relative.name):
            self._leave_alone(relative.as_posix())
            return
        with self._changed:
            seen = self._pending.get(path)
            if seen is None:
                self._pending[path] = _Observation(-1, -1, time.monotonic())
                self._changed.notify_all()
            else:
                seen.touched = True  # an event while we look at it: settle it again afterwards

    def _leave_alone(self, source: str) -> None:
        """A file that is not a picture (README.md, notes.txt) is never a job and never moved."""
        if source not in self.not_pictures:
            self.not_pictures.add(source)
            log.info("not a picture; left in the inbox", file=display_name(source))

    def not_pictures_note(self) -> list[str]:
        """For status: how many such files are still in the inbox (a line, or none)."""
        self.not_pictures = {source for source in self.not_pictures if (self.inbox / source).exists()}
        if not self.not_pictures:
            return []
        names = sorted(display_name(source) for source in self.not_pictures)
        listed = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return [f"{len(names)} file(s) in the inbox are not pictures and are left alone: {listed}"]

    # Settling and enqueueing.

    def _settle_loop(self) -> None:
        while not self._stopping.is_set():
            with self._changed:
                while not self._pending and not self._stopping.is_set():
                    self._changed.wait()
                candidates = list(self._pending.items())
            for path, seen in candidates if not self._inbox_replaced() else []:
                try:
                    self._check(path, seen)
                except Exception as error:  # e.g. the database is locked: keep the file, try next tick
                    self._repeats.log(log.exception, "could not record a file; will retry",
                                      error=str(error), file=str(path))
            self._stopping.wait(min(0.5, max(0.05, self.settings.settle_seconds / 4)))

    def _check(self, path: Path, seen: _Observation) -> None:
        now = time.monotonic()
        seen.touched = False  # what happened so far shows in the stat below
        if seen.waiting_on is not None:
            job = self.store.get(seen.waiting_on)
            if job is not None and job.state in ACTIVE:
                return
            seen.waiting_on, seen.stable_since, seen.unsettled_since = None, now, now
        readable = self._readable(path, seen)
        if readable is None:
            return
        try:
            status = dropped.status(self.inbox, readable)
            if (status.st_size, status.st_mtime_ns) != (seen.size, seen.mtime_ns):
                seen.size, seen.mtime_ns, seen.stable_since = status.st_size, status.st_mtime_ns, now
                return
            # An empty file is never settled: share clients create the name first and write later.
            seen.parked = status.st_size == 0
            if seen.parked or now - seen.stable_since < self.settings.settle_seconds:
                return
            read = dropped.read(self.inbox, readable, self.settings.max_file_bytes)
            if read.mtime_ns != seen.mtime_ns or read.size != status.st_size:
                return  # written to while we read it
        except dropped.TooLarge as error:  # refused from its size: not one byte is read
            self._set_aside(path, f"{error}; not read", error.size)
            return
        except TimeoutError as error:  # a file this slow would hold up every other one
            self._set_aside(path, str(error), status.st_size)
            return
        except PermissionError as error:
            self._report_once(path, f"cannot read {self._shown(path)} ({error.strerror}); "
                                    "it stays in the inbox until recond may read it")
            seen.parked = True
            return
        except OSError as error:
            log.debug("file not readable yet", file=self._shown(path), error=str(error))
            return
        self._record(path, seen, read.sha256, read.size)

    def _set_aside(self, path: Path, reason: str, size: int) -> None:
        """A settled file over max_file_bytes, or one too slow to read: a failed job at once,
        moved to failed/ with a note and a status line, so it costs the pictures behind it
        nothing more (issue 18)."""
        source = self._relative(path).as_posix()
        latest = self.store.latest(source)
        if latest and latest.state == FAILED and latest.output == str(path) and latest.size == size:
            self._forget(path)  # refused before, and could not be moved to failed/: not again
            return
        job = self.store.record_refused(source, size, reason)
        set_aside(self.store, self.inbox, job, reason)
        self._warn(f"{self._shown(path)} set aside in failed/: {reason}")
        self._forget(path)

    def _readable(self, path: Path, seen: _Observation) -> str | None:
        """The regular file to read for this name, below the inbox, or None (gone, or never
        to be taken: a link, or a name reached through a folder that became a link)."""
        relative = self._relative(path).as_posix()
        kind = dropped.kind(self.inbox, relative)
        if kind is None:
            self._forget(path)  # gone (renamed away, deleted): its new name brings its own event
            return None
        if kind == dropped.FILE:
            return relative
        seen.parked = True
        if kind == dropped.OTHER:
            if path not in self._reported:
                self._reported.add(path)
                log.info("not a regular file; ignored", file=self._shown(path))
            return None
        target = (dropped.link_target_inside(self.inbox, relative) if self.settings.follow_inbox_links
                  else None)
        if target is None:
            self._report_once(path, f"{self._shown(path)} is a symlink; ignored (recond takes only "
                                    "regular files; follow_inbox_links allows links to files "
                                    "inside the inbox)")
        return target

    def _record(self, path: Path, seen: _Observation, sha256: str, size: int) -> None:
        source = self._relative(path).as_posix()
        latest = self.store.latest(source)
        if latest and latest.sha256 == sha256:
            if latest.state in (DONE, DUPLICATE) and self._held_by_result(latest.output, sha256):
                self._remove_copy(path, source, sha256, size)  # a removal that failed before
                self._forget(path)
                return
            if latest.state == FAILED and latest.output == str(path):
                self._forget(path)  # failed, and could not be moved to failed/: not again
                return
        job, created = self.store.enqueue(source, sha256, size, result_name_for(source, time.time()),
                                          result_holds=self._held_by_result)
        if not created and job.sha256 != sha256:
            seen.waiting_on = job.id  # changed while its job runs: a new job once that ends
            return
        self._forget(path)  # only now, so `idle()` never sees a file that is in neither place
        if not created:
            return
        if job.state == DUPLICATE:
            log.info("duplicate recorded", job=job.id, file=job.source, duplicate_of=job.duplicate_of,
                     output=job.output)
            if self._held_by_result(job.output, sha256):
                self._remove_copy(path, source, sha256, size)
            return  # a copy of an active job waits for its result (the worker removes it then)
        log.info("job queued", job=job.id, file=job.source, bytes=size, result_name=job.result_name)
        self.on_enqueued(job)

    def _held_by_result(self, output: str | None, sha256: str) -> bool:
        return result_holds(output, sha256)

    def _remove_copy(self, path: Path, source: str, sha256: str, size: int) -> None:
        """Remove a byte-identical copy whose bytes a published result holds as source.*."""
        try:
            if dropped.remove_if_holds(self.inbox, source, sha256, size):
                remove_emptied_folders(self.inbox, source)
        except OSError as error:
            self._report_once(path, f"{self._shown(path)} could not be removed from the inbox "
                                    f"({error.strerror}); its bytes are safe in a result")

    def _report_once(self, path: Path, message: str) -> None:
        if path not in self._reported:
            self._reported.add(path)
            self._warn(message)

    def _shown(self, path: Path) -> str:
        return display_name(self._relative(path).as_posix())

    def _forget(self, path: Path) -> None:
        """Stop watching, unless an event came in meanwhile (then it is looked at afresh)."""
        with self._changed:
            seen = self._pending.get(path)
            if seen is not None and seen.touched:
                seen.touched, seen.size, seen.waiting_on = False, -1, None
                return
            self._pending.pop(path, None)

    def _relative(self, path: Path) -> PurePosixPath:
        return PurePosixPath(Path(os.path.abspath(path)).relative_to(self.inbox).as_posix())

    # Watcher health.

    def supervise(self) -> None:
        """Re-arm a dead watcher (or one watching a vanished inbox) and run due rescans."""
        if self._inbox_replaced():
            return
        problem = self._watcher_problem()
        if problem:
            if self._observer is not None:
                self._warn(f"watcher stopped ({problem}); re-arming it")
                self._disarm()
            if self.inbox.is_dir():
                self._arm()
                self.scan()
            elif not self.warnings or "is missing" not in self.warnings[-1]:
                self._warn(f"inbox {self.inbox} is missing; waiting for it to come back")
            return
        if self._overflowed.is_set():
            self._overflowed.clear()
            log.warning("the watcher dropped events (inotify queue overflow); rescanning the inbox now")
            self.scan()
        elif time.monotonic() - self._last_scan >= self.settings.rescan_seconds:
            self.scan()
        if time.monotonic() - self._last_poll >= self.settings.poll_interval:
            self._poll_unwatched()

    def _inbox_replaced(self) -> bool:
        """Is the inbox there but not the folder intake started with (a bare mount point, a
        symlink)? Then intake takes nothing, with the reason in ``paused`` for the status,
        until the folder is back (a missing inbox is waited for below)."""
        problem = self.identity.check() if os.path.lexists(self.inbox) else None
        if problem != self.paused:
            if problem:
                log.warning("intake paused", reason=problem)
            else:
                log.info("intake resumed: the inbox is back", inbox=str(self.inbox))
            self.paused = problem
        return problem is not None

    def _watcher_problem(self) -> str | None:
        if not self.inbox.is_dir():
            return "the inbox is missing"
        observer = self._observer
        if observer is None:
            return "not started"
        if not observer.is_alive() or not observer.emitters:
            return "observer thread died"
        if not all(emitter.is_alive() for emitter in observer.emitters):
            return "emitter thread died"
        if self._inode() != self._armed_inode:
            return "the inbox was replaced by a new folder"
        return None

    def _arm(self) -> None:
        polling = self.settings.polling
        try:
            observer = self._started_observer(polling)
        except OSError as error:  # not even the inbox itself could be watched: poll all of it
            if polling or error.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            if error.errno == errno.EMFILE:  # (ENOSPC was told by _not_watched)
                self._warn(f"inotify instance limit reached (fs.inotify.max_user_instances): the "
                           f"inbox is polled every {self.settings.poll_interval:g} s instead")
            with self._unwatched_lock:
                self._unwatched.clear()  # the polling observer covers every folder
            polling, observer = True, self._started_observer(True)
        self._observer, self._armed_inode = observer, self._inode()
        log.info("watching inbox", inbox=str(self.inbox), mode="polling" if polling else "native")

    def _started_observer(self, polling: bool) -> BaseObserver:
        observer: BaseObserver
        if polling:
            observer = PollingObserver(timeout=self.settings.poll_interval)
        else:
            observer = ReportingInotifyObserver(on_overflow=self._overflowed.set,
                                                on_unwatched=self._not_watched)
        observer.schedule(_Events(self), str(self.inbox), recursive=True, event_filter=list(INTAKE_EVENTS))
        observer.daemon = True
        try:
            observer.start()
        except OSError:
            self._stop_observer(observer)
            raise
        return observer

    def _not_watched(self, folder: Path) -> None:
        """Past the watch limit: the folder is polled (``_poll_unwatched``), and status says so."""
        with self._unwatched_lock:
            first = not self._unwatched
            self._unwatched.add(folder)
        if first:
            self._warn(f"inotify watch limit reached (fs.inotify.max_user_watches): "
                       f"inbox folder '{self._shown(folder)}' and any others past the limit are "
                       f"polled every {self.settings.poll_interval:g} s instead")

    def _poll_unwatched(self) -> None:
        """Consider each file in an unwatched folder whose size or mtime changed since the last poll."""
        self._last_poll = time.monotonic()
        with self._unwatched_lock:
            folders = sorted(self._unwatched)
        roots = [folder for folder in folders if not any(other in folder.parents for other in folders)]
        seen: dict[Path, tuple[int, int]] = {}
        for root in roots:
            for path in self._files_under(root):
                try:
                    status = path.lstat()
                except OSError:
                    continue
                seen[path] = (status.st_size, status.st_mtime_ns)
                if self._polled.get(path) != seen[path]:
                    self.consider(path)
        self._polled = seen

    def _disarm(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            self._stop_observer(observer)
        with self._unwatched_lock:
            self._unwatched.clear()  # the next observer reports its own

    @staticmethod
    def _stop_observer(observer: BaseObserver) -> None:
        try:
            observer.stop()
            observer.join(timeout=5)
        except Exception as exc:  # a watcher that already died may fail to stop; it is gone either way
            log.debug("stopping dead watcher failed", error=str(exc))

    def _inode(self) -> tuple[int, int] | None:
        try:
            status = self.inbox.stat()
        except OSError:
            return None
        return status.st_dev, status.st_ino

    def _warn(self, message: str) -> None:
        log.warning(message, inbox=str(self.inbox))
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        self.warnings = [*self.warnings, stamped][-MAX_WARNINGS:]
