"""Server-sent event streams of jobs: one upload's, one job's, or every job's.

Each stream is counted (guards.StreamCounter: a client cannot open them without end), is cut
when its client stops reading, and ends on its own when its job ends. A stream for an upload
that does not exist, or whose file left the inbox without becoming a job, ends with an
``error`` event instead of waiting forever. A queued job's stream also tells its place in the
queue as the jobs ahead of it move.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from recond.names import is_upload_of, upload_prefix
from recond.store import ACTIVE, QUEUED, Job, Store
from recond.web.feed import JobFeed, StoreReader
from recond.web.guards import StreamCounter

RECHECK_SECONDS = 5.0  # how often a waiting upload's stream checks its file is still in the inbox
SEND_TIMEOUT_SECONDS = 30.0  # a client that reads nothing for this long loses its stream

Event = dict[str, str]


class EventStreams:
    """Opens the event streams of one recond-web process."""

    def __init__(self, feed: JobFeed, reader: StoreReader, counter: StreamCounter, inbox: Path,
                 describe: Callable[[Job], dict[str, Any]]) -> None:
        self.feed, self.reader, self.counter, self.inbox = feed, reader, counter, inbox
        self.describe = describe  # a job as the API shows it

    def upload(self, request: Request, upload_id: str) -> EventSourceResponse:
        prefix = upload_prefix(upload_id)
        return self._open(request, self._follow(
            lambda job: is_upload_of(job.source, upload_id), lambda store: store.by_source_prefix(prefix),
            known=lambda: self.upload_known(prefix), unknown=f"no upload {upload_id}"))

    def job(self, request: Request, job_id: int) -> EventSourceResponse:
        return self._open(request, self._follow(lambda job: job.id == job_id,
                                                lambda store: store.get(job_id)))

    def everything(self, request: Request) -> EventSourceResponse:
        async def stream() -> AsyncIterator[Event]:
            with self.feed.subscribe() as queue:
                while True:
                    yield job_event(self.describe(await queue.get()))
        return self._open(request, stream())

    def upload_known(self, prefix: str) -> bool:
        """Whether an upload has a job or a file in the inbox. The daemon records the job before
        the file leaves the inbox, so asking job, file, job again cannot miss one in between."""
        def has_job() -> bool:
            return self.reader.read(lambda store: store.by_source_prefix(prefix), None) is not None
        return (has_job() or any(self.inbox.glob(f"{prefix}*"))
                or any(self.inbox.glob(f"*/{prefix}*")) or has_job())  # under a preset's folder

    def _open(self, request: Request, events: AsyncIterator[Event]) -> EventSourceResponse:
        give_back = self.counter.take(request.client.host if request.client else "")
        return _CountedStream(events, give_back)

    async def _follow(self, matches: Callable[[Job], bool], current: Callable[[Store], Job | None],
                      known: Callable[[], bool] | None = None, unknown: str = "") -> AsyncIterator[Event]:
        with self.feed.subscribe() as queue:  # subscribed before reading: no change falls between
            job = await self.reader.aread(current, None)
            if job is None:
                if known and not await asyncio.to_thread(known):
                    yield gone(unknown)
                    return
                yield {"event": "waiting", "data": json.dumps({"state": "waiting"})}
            shown = None
            while True:
                if job is not None:
                    facts = await self._facts(job)
                    if facts != shown:
                        yield job_event(facts)
                        shown = facts
                    if job.state not in ACTIVE:
                        return
                try:
                    checking = job is None and known is not None
                    changed = await (asyncio.wait_for(queue.get(), RECHECK_SECONDS) if checking
                                     else queue.get())
                except TimeoutError:
                    if known and not await asyncio.to_thread(known):
                        yield gone(f"{unknown}: its file left the inbox without becoming a job")
                        return
                    continue
                if matches(changed):
                    job = changed

    async def _facts(self, job: Job) -> dict[str, Any]:
        facts = self.describe(job)
        if job.state == QUEUED:
            facts["queue_position"] = 1 + await self.reader.aread(
                lambda store: store.queued_before(job.id), 0)
        return facts


def job_event(facts: dict[str, Any]) -> Event:
    return {"event": "job", "id": f"{facts['id']}-{facts['updated_at']}", "data": json.dumps(facts)}


def gone(detail: str) -> Event:
    return {"event": "error", "data": json.dumps({"detail": detail})}


class _CountedStream(EventSourceResponse):
    """An event stream that gives its place back to the counter however it ends."""

    def __init__(self, events: AsyncIterator[Event], give_back: Callable[[], None]) -> None:
        super().__init__(events, send_timeout=SEND_TIMEOUT_SECONDS)
        self.give_back = give_back

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.give_back()
