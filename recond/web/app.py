"""The recond-web application: upload page, REST API, event streams, result pages, gallery, metrics.

It reads the daemon's store and outbox and writes only into the inbox (through uploads.py);
the daemon stays the only thing that creates and runs jobs. Nothing here imports torch.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from sse_starlette import EventSourceResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from recond import __version__
from recond.status import job_facts, status_report
from recond.config import Settings
from recond.gallery import entries, render_page
from recond.logging import get_logger
from recond.pipeline.names import VIEWER_NAME
from recond.store import ACTIVE, DONE, DUPLICATE, STATES, Job, Store
from recond.web.feed import JobFeed, StoreReader
from recond.web.metrics import Metrics
from recond.upload_names import UPLOAD_ID, upload_prefix
from recond.web.uploads import Upload, UploadRefused, receive_uploads

ASSETS = Path(__file__).with_name("assets")  # served as they are under /assets/
UPLOAD_PAGE = Path(__file__).with_name("upload.html")  # the page at /, its nav filled in
GALLERY_PAGE_SIZE = 50
OPEN_PATHS = ("/healthz",)  # reachable without the token (load balancers, systemd checks)
NAV = '<a href="/">Upload</a><a href="/gallery">Gallery</a><a href="/docs">API</a>'
# A result folder or file name as the outbox holds them: visible, one path segment.
PLAIN_NAME = re.compile(r"[^./\\\x00-\x1f][^/\\\x00-\x1f]*")

log = get_logger("recond.web")


@dataclass
class JobView(Job):
    """A job as the API shows it: the fields of `reconctl show --json`, plus its result page."""

    result_url: str | None = None
    background: str | None = None  # these two only on /api/jobs/{id}, from the job's job.json
    stage_seconds: dict[str, float] | None = None


class UploadView(BaseModel):
    """One accepted file: follow it at ``status_url`` or ``events_url``."""

    upload_id: str
    name: str
    source: str
    bytes: int
    status_url: str
    events_url: str


class UploadsAccepted(BaseModel):
    uploads: list[UploadView]


class UploadState(BaseModel):
    """An upload's job, or state ``waiting`` (and no job) until the daemon has taken the file."""

    upload_id: str
    state: str
    job: JobView | None


class BearerToken:
    """Every request but /healthz must carry ``Authorization: Bearer <web_token>``.

    Plain ASGI rather than a FastAPI dependency, so it also guards the docs, the static files
    and an upload's body is never read when the token is missing.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                refusal = JSONResponse(
                    {"detail": "missing or wrong token: send Authorization: Bearer <web_token>"},
                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    """The whole web front end for one installation's settings."""
    outbox = settings.outbox.resolve()
    reader = StoreReader(settings.db_path)
    metrics = Metrics(settings)
    feed = JobFeed(reader, observers=(metrics.observe,))
    upload_slots = asyncio.Semaphore(settings.web_max_uploads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher = asyncio.create_task(feed.run())
        try:
            yield
        finally:
            watcher.cancel()
            reader.close()

    app = FastAPIOffline(title="recond", version=__version__, lifespan=lifespan, description=(
        "Upload photos to recond's inbox and follow them to a 3D result. A POST answers 202 with "
        "an upload id per file; the job appears once the daemon has taken the file "
        "(GET /api/uploads/{upload_id} or its /events stream)."))
    if settings.web_token:
        app.add_middleware(BearerToken, token=settings.web_token)
    if settings.web_cors_origins:  # outermost, so preflights (which carry no token) are answered
        app.add_middleware(CORSMiddleware, allow_origins=settings.web_cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization"])
    app.mount("/assets", StaticFiles(directory=ASSETS), name="assets")

    def job_view(job: Job) -> JobView:
        return JobView(**vars(job), result_url=result_url(job, outbox))

    async def read(query: Callable[[Store], Any], default: Any = None) -> Any:
        return await reader.aread(query, default)

    # Pages.

    upload_page_html = UPLOAD_PAGE.read_text(encoding="utf-8").replace("{{NAV}}", NAV)

    @app.get("/", include_in_schema=False)
    async def upload_page() -> HTMLResponse:
        return HTMLResponse(upload_page_html)

    @app.get("/gallery", include_in_schema=False)
    async def gallery(page: int = Query(1, ge=1)) -> HTMLResponse:
        offset = (page - 1) * GALLERY_PAGE_SIZE
        total, cards = await read(lambda store: (store.count_finished(), entries(
            store, outbox, GALLERY_PAGE_SIZE, offset)), (0, []))
        pages = max(1, math.ceil(total / GALLERY_PAGE_SIZE))
        return HTMLResponse(render_page(
            cards, "/results/", "", "Results", nav=NAV, pager=_pager(page, pages),
            summary=f"{total:,} finished jobs, newest first · page {page} of {pages}"))

    @app.get("/results/{name}", include_in_schema=False)
    async def result_folder_without_slash(name: str) -> RedirectResponse:
        _result_dir(outbox, name)
        return RedirectResponse(f"/results/{quote(name)}/")  # relative links need the slash

    @app.get("/results/{name}/", include_in_schema=False)
    async def result_page(name: str) -> FileResponse:
        return FileResponse(_result_file(outbox, name, VIEWER_NAME))

    @app.get("/results/{name}/{file}", include_in_schema=False)
    async def result_file(name: str, file: str) -> FileResponse:
        return FileResponse(_result_file(outbox, name, file))

    # API.

    @app.post("/api/jobs", status_code=202, tags=["jobs"], openapi_extra=UPLOAD_SCHEMA,
              responses={202: {"model": UploadsAccepted, "description": "Accepted: one entry "
                                "per file, each with its upload id and where to follow it."},
                         400: {"description": "No file, a bad file name, or an empty file."},
                         401: {"description": "Token missing (when web_token is set)."},
                         413: {"description": "A file over max_file_bytes or too many files."},
                         415: {"description": "Not multipart, or a file that is no picture."},
                         429: {"description": "Too many uploads at once; retry shortly."},
                         503: {"description": "The inbox is not there (a share that is down)."}})
    async def upload(request: Request) -> Response:
        """Upload one or more pictures (multipart/form-data, any field name). All or nothing:
        a refused file leaves nothing of the request in the inbox."""
        if upload_slots.locked():
            return JSONResponse({"detail": f"{settings.web_max_uploads} uploads are already "
                                           "running (setting web_max_uploads); retry shortly"},
                                status_code=429, headers={"Retry-After": "1"})
        async with upload_slots:
            try:
                accepted = await receive_uploads(request, settings)
            except UploadRefused as refusal:
                log.info("upload refused", status=refusal.status, reason=str(refusal))
                return JSONResponse({"detail": str(refusal)}, status_code=refusal.status)
            except ClientDisconnect:
                log.info("upload abandoned by the client; its files were removed")
                return Response(status_code=400)
        log.info("upload accepted", files=[item.source for item in accepted])
        headers = {"Location": f"/api/uploads/{accepted[0].upload_id}"} if len(accepted) == 1 else {}
        return JSONResponse({"uploads": [_upload_view(item) for item in accepted]},
                            status_code=202, headers=headers)

    @app.get("/api/uploads/{upload_id}", tags=["jobs"])
    async def upload_state(upload_id: str) -> UploadState:
        """An upload's job once the daemon made it (``job`` null and state ``waiting`` before)."""
        prefix = _upload_prefix(upload_id)
        job = await read(lambda store: store.by_source_prefix(prefix))
        if job is not None:
            return UploadState(upload_id=upload_id, state=job.state, job=job_view(job))
        if not any((settings.inbox / prefix).parent.glob(f"{upload_id}-*")):
            raise HTTPException(404, f"no upload {upload_id}")
        return UploadState(upload_id=upload_id, state="waiting", job=None)

    @app.get("/api/uploads/{upload_id}/events", tags=["events"])
    async def upload_events(upload_id: str) -> EventSourceResponse:
        """Server-sent events: ``waiting`` until the daemon has the file, then ``job`` events
        (stage, progress, eta_s) until the job ends."""
        prefix = _upload_prefix(upload_id)
        return EventSourceResponse(follow(lambda job: job.source.startswith(prefix),
                                          lambda store: store.by_source_prefix(prefix)))

    @app.get("/api/jobs", tags=["jobs"])
    async def list_jobs(state: str | None = Query(None, pattern=f"^({'|'.join(STATES)})$"),
                        limit: int = Query(50, ge=1, le=1000)) -> list[JobView]:
        """Jobs newest first (the fields of `reconctl jobs --json`)."""
        jobs = await read(lambda store: store.jobs(state, limit), [])
        return [job_view(job) for job in jobs]

    @app.get("/api/jobs/{job_id}", tags=["jobs"])
    async def show_job(job_id: int) -> JobView:
        """One job (the fields of `reconctl show --json`)."""
        job = await read(lambda store: store.get(job_id))
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return JobView(**job_facts(job), result_url=result_url(job, outbox))

    @app.get("/api/jobs/{job_id}/events", tags=["events"])
    async def job_events(job_id: int) -> EventSourceResponse:
        """Server-sent ``job`` events for one job until it is done, failed or a duplicate."""
        if await read(lambda store: store.get(job_id)) is None:
            raise HTTPException(404, f"no job {job_id}")
        return EventSourceResponse(follow(lambda job: job.id == job_id,
                                          lambda store: store.get(job_id)))

    @app.get("/api/events", tags=["events"])
    async def all_events() -> EventSourceResponse:
        """Server-sent ``job`` events for every change of any job, for as long as you listen."""
        async def stream() -> AsyncIterator[dict[str, str]]:
            with feed.subscribe() as queue:
                while True:
                    yield _event(job_view(await queue.get()))
        return EventSourceResponse(stream())

    async def follow(matches: Callable[[Job], bool],
                     current: Callable[[Store], Job | None]) -> AsyncIterator[dict[str, str]]:
        with feed.subscribe() as queue:  # subscribed before reading: no change falls between
            job = await read(current)
            if job is None:
                yield {"event": "waiting", "data": json.dumps({"state": "waiting"})}
            while True:
                if job is not None:
                    yield _event(job_view(job))
                    if job.state not in ACTIVE:
                        return
                job = await queue.get()
                if not matches(job):
                    job = None

    @app.get("/api/status", tags=["operations"])
    async def status() -> dict[str, Any]:
        """The document `reconctl status --json` prints."""
        return await asyncio.to_thread(status_report, settings)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text format: recond_jobs{state}, recond_queue_length, recond_daemon_up,
        recond_model_loaded, recond_stage_seconds (histogram by stage)."""
        body = await asyncio.to_thread(metrics.render)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """recond-web answers (open without the token)."""
        return {"status": "ok"}

    return app


UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "properties": {"image": {"type": "array", "items": {
        "type": "string", "format": "binary"}}}}}}}}


def result_url(job: Job, outbox: Path) -> str | None:
    """The result page of a done job, or of the earlier job a duplicate points at."""
    if job.state == DONE and job.result_name:
        return f"/results/{quote(job.result_name)}/"
    if job.state == DUPLICATE and job.output and Path(job.output).parent == outbox:
        return f"/results/{quote(Path(job.output).name)}/"
    return None


def _upload_view(upload: Upload) -> dict[str, Any]:
    return UploadView(upload_id=upload.upload_id, name=upload.name, source=upload.source,
                      bytes=upload.size, status_url=f"/api/uploads/{upload.upload_id}",
                      events_url=f"/api/uploads/{upload.upload_id}/events").model_dump()


def _upload_prefix(upload_id: str) -> str:
    if not UPLOAD_ID.fullmatch(upload_id):
        raise HTTPException(400, "an upload id is 16 lowercase hex digits")
    return upload_prefix(upload_id)


def _event(view: JobView) -> dict[str, str]:
    return {"event": "job", "id": f"{view.id}-{view.updated_at}", "data": json.dumps(vars(view))}


def _result_dir(outbox: Path, name: str) -> Path:
    """A published result folder directly in the outbox; refuses anything else (no symlink out)."""
    if not PLAIN_NAME.fullmatch(name):
        raise HTTPException(400, f"{name!r} is not a result folder name")
    folder = outbox / name
    if not folder.is_dir() or folder.resolve().parent != outbox:
        raise HTTPException(404, f"no result {name}")
    return folder


def _result_file(outbox: Path, name: str, file: str) -> Path:
    folder = _result_dir(outbox, name)
    if not PLAIN_NAME.fullmatch(file):
        raise HTTPException(400, f"{file!r} is not a file name of a result")
    path = folder / file
    if not path.is_file() or path.resolve().parent != folder.resolve():
        raise HTTPException(404, f"no file {file} in result {name}")
    return path


def _pager(page: int, pages: int) -> str:
    links = []
    if page > 1:
        links.append(f'<a rel="prev" href="/gallery?page={page - 1}">← Newer</a>')
    if page < pages:
        links.append(f'<a rel="next" href="/gallery?page={page + 1}">Older →</a>')
    return f'<nav class="pager">{"".join(links)}</nav>'
