"""The inbox watcher: notices files (events, a startup scan, periodic rescans), waits until each
has stopped changing, and records it in the store as a job.

It only queues; the worker processes. Watchers on network shares die silently (the polling
emitter stops for good when the share vanishes, watchdog issue #1065), so ``supervise`` checks
the watcher and re-arms it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from recond.config import Settings
from recond.logging import get_logger
from recond.pipeline.image import is_picture_name
from recond.store import DUPLICATE, Job, Store

FAILED_FOLDER = "failed"  # inbox/failed/ holds files that could not be processed
IGNORED_NAMES = (".*", "~$*", "*.part", "*.crdownload", "*.tmp", "thumbs.db", "._*")
JUNK_FOLDERS = {"@eadir", ".stfolder", "__macosx", ".trashes", ".spotlight-v100"}
MAX_WARNINGS = 10

log = get_logger("recond.intake")


def is_ignored(relative: PurePosixPath) -> bool:
    """Temporary, hidden and system files, junk folders and inbox/failed/ are never jobs."""
    parts = relative.parts
    if len(parts) > 1 and parts[0] == FAILED_FOLDER:
        return True
    if any(folder.lower() in JUNK_FOLDERS or folder.startswith(".") for folder in parts[:-1]):
        return True
    name = parts[-1].lower()  # Windows and macOS names are case-insensitive
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in IGNORED_NAMES)


def result_name_for(source: str, queued_at: float) -> str:
    """``20261125-071503_<subfolders>_<stem>``: sorts by time, says where the photo came from."""
    relative = PurePosixPath(source)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(queued_at))
    words = [re.sub(r"[^\w.-]+", "-", part).strip(".-") for part in (*relative.parent.parts, relative.stem)]
    return "_".join([stamp, *(word for word in words if word)])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class _Observation:
    size: int
    mtime_ns: int
    stable_since: float


class _Events(FileSystemEventHandler):
    """Turns watchdog events into candidates; a file renamed into the inbox counts as new."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("deleted", "opened", "closed_no_write"):
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
        self._pending: dict[Path, _Observation] = {}
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._observer: BaseObserver | None = None
        self._armed_inode: tuple[int, int] | None = None
        self._last_scan = 0.0
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

    def idle(self) -> bool:
        """Nothing waiting to settle (used by ``recond --once``)."""
        with self._changed:
            return not self._pending

    # Finding candidates.

    def scan(self, folder: Path | None = None) -> None:
        """Consider every file under ``folder`` (default: the whole inbox) without a job yet."""
        folder = folder or self.inbox
        active = self.store.active_sources()
        for root, dirs, files in os.walk(folder):
            base = Path(root)
            # A folder is skipped when any file inside it would be (junk, hidden, failed/).
            dirs[:] = [d for d in dirs if not is_ignored(self._relative(base / d / "file"))]
            for name in files:
                path = base / name
                if self._relative(path).as_posix() not in active:
                    self.consider(path)
        if folder == self.inbox:
            self._last_scan = time.monotonic()

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
            if path not in self._pending:
                self._pending[path] = _Observation(-1, -1, time.monotonic())
                self._changed.notify_all()

    def _leave_alone(self, source: str) -> None:
        """A file that is not a picture (README.md, notes.txt) is never a job and never moved."""
        if source not in self.not_pictures:
            self.not_pictures.add(source)
            log.info("not a picture; left in the inbox", file=source)

    def not_pictures_note(self) -> list[str]:
        """For status: how many such files are still in the inbox (a line, or none)."""
        self.not_pictures = {source for source in self.not_pictures if (self.inbox / source).exists()}
        if not self.not_pictures:
            return []
        names = sorted(self.not_pictures)
        listed = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return [f"{len(names)} file(s) in the inbox are not pictures and are left alone: {listed}"]

    # Settling and enqueueing.

    def _settle_loop(self) -> None:
        while not self._stopping.is_set():
            with self._changed:
                while not self._pending and not self._stopping.is_set():
                    self._changed.wait()
                candidates = list(self._pending.items())
            for path, seen in candidates:
                try:
                    self._check(path, seen)
                except Exception:  # e.g. the database is locked: keep the file, try next tick
                    log.exception("could not record file; will retry", file=str(path))
            self._stopping.wait(min(0.5, max(0.05, self.settings.settle_seconds / 4)))

    def _check(self, path: Path, seen: _Observation) -> None:
        now = time.monotonic()
        try:
            status = path.stat()
        except OSError:
            self._forget(path)  # gone (renamed away, deleted): its new name brings its own event
            return
        if (status.st_size, status.st_mtime_ns) != (seen.size, seen.mtime_ns):
            seen.size, seen.mtime_ns, seen.stable_since = status.st_size, status.st_mtime_ns, now
            return
        if now - seen.stable_since < self.settings.settle_seconds:
            return
        try:
            sha256 = sha256_of(path)  # also proves the file can be opened and read
            if path.stat().st_mtime_ns != seen.mtime_ns:
                return  # written to while we read it
        except OSError as exc:
            log.debug("file not readable yet", file=str(path), error=str(exc))
            return
        self._enqueue(path, sha256, status.st_size)
        self._forget(path)  # only now, so `idle()` never sees a file that is in neither place

    def _enqueue(self, path: Path, sha256: str, size: int) -> None:
        source = self._relative(path).as_posix()
        job, created = self.store.enqueue(
            source, sha256, size, result_name_for(source, time.time()),
            result_exists=lambda output: bool(output) and Path(output).is_dir())
        if not created:
            return
        if job.state == DUPLICATE:
            # Byte-identical to a photo that has (or will have) a result: its bytes already live
            # there as source.<ext>, so removing this copy loses nothing.
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                log.warning("duplicate not removed from the inbox", file=source, error=str(error))
            log.info("duplicate recorded", job=job.id, file=source, duplicate_of=job.duplicate_of,
                     output=job.output)
            return
        log.info("job queued", job=job.id, file=source, bytes=size, result_name=job.result_name)
        self.on_enqueued(job)

    def _forget(self, path: Path) -> None:
        with self._changed:
            self._pending.pop(path, None)

    def _relative(self, path: Path) -> PurePosixPath:
        return PurePosixPath(Path(os.path.abspath(path)).relative_to(self.inbox).as_posix())

    # Watcher health.

    def supervise(self) -> None:
        """Re-arm a dead watcher (or one watching a vanished inbox) and run due rescans."""
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
        if time.monotonic() - self._last_scan >= self.settings.rescan_seconds:
            self.scan()

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
        if self.settings.polling:
            observer: BaseObserver = PollingObserver(timeout=self.settings.poll_interval)
        else:
            observer = Observer()
        observer.schedule(_Events(self), str(self.inbox), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer, self._armed_inode = observer, self._inode()
        log.info("watching inbox", inbox=str(self.inbox),
                 mode="polling" if self.settings.polling else "native")

    def _disarm(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
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
