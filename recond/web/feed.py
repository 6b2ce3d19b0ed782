"""The web process's view of the job store: locked reads, and one watcher fanning changes out.

The daemon knows nothing of the web: it writes jobs to SQLite as always. Here a single task asks
SQLite's ``data_version`` a few times a second whether anyone committed; only then does it read
the rows that changed and hand each to every subscriber (the event streams) and observer (the
metrics). However many browsers follow progress, the database sees one cheap query per tick.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import anyio

from recond.logging import get_logger
from recond.store import Job, Store

POLL_SECONDS = 0.25
CLOCK_SLACK_SECONDS = 2.0  # re-read rows stamped this long before the newest seen (late commits)
SUBSCRIBER_BACKLOG = 10_000

T = TypeVar("T")
log = get_logger("recond.web")


class StoreReader:
    """The daemon's database, opened once it exists (the web never creates it), one reader at a time."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._store: Store | None = None
        self._lock = threading.Lock()

    def read(self, query: Callable[[Store], T], default: T) -> T:
        """``query(store)``, or ``default`` while the daemon has never run."""
        with self._lock:
            if self._store is None:
                if not self.db_path.is_file():
                    return default
                self._store = Store(self.db_path)
            return query(self._store)

    async def aread(self, query: Callable[[Store], T], default: T) -> T:
        return await anyio.to_thread.run_sync(self.read, query, default)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


class JobFeed:
    """Polls the store for changed jobs; subscribers get each change on an asyncio queue."""

    def __init__(self, reader: StoreReader, observers: tuple[Callable[[Job], None], ...] = ()) -> None:
        self.reader = reader
        self.observers = observers  # called in a worker thread with every job, history included
        self._subscribers: set[asyncio.Queue[Job]] = set()
        self._version: int | None = None
        self._newest = 0.0
        self._seen: dict[int, float | None] = {}  # job id -> updated_at last handed out
        self._baseline_done = False

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[Job]]:
        """A queue receiving every job change from now on, until the with-block ends."""
        queue: asyncio.Queue[Job] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    async def run(self) -> None:
        """The one watcher: runs for the life of the web process."""
        while True:
            try:
                changed = await anyio.to_thread.run_sync(self._changes)
            except Exception as error:  # e.g. the database is briefly locked: try next tick
                log.warning("job store not readable", error=str(error))
                changed = []
            for job in changed:
                for queue in list(self._subscribers):
                    if not queue.full():  # a stuck client loses events, never the others
                        queue.put_nowait(job)
            await anyio.sleep(POLL_SECONDS)

    def _changes(self) -> list[Job]:
        jobs: list[Job] = self.reader.read(self._read_changes, [])
        for job in jobs:
            for observe in self.observers:
                observe(job)
        if not self._baseline_done:  # the history is for observers, not for live streams
            self._baseline_done = bool(self.reader.db_path.is_file())
            return []
        return jobs

    def _read_changes(self, store: Store) -> list[Job]:
        version = store.data_version()
        if version == self._version:
            return []
        self._version = version
        rows = store.changed_since(self._newest - CLOCK_SLACK_SECONDS)
        fresh = [job for job in rows if self._seen.get(job.id) != job.updated_at]
        if rows:
            self._newest = max(self._newest, max(job.updated_at or 0.0 for job in rows))
        horizon = self._newest - CLOCK_SLACK_SECONDS
        self._seen = {job.id: job.updated_at for job in rows
                      if job.updated_at is not None and job.updated_at >= horizon}
        return fresh
