"""The recond-web application: upload page, REST API, event streams, result pages, gallery, metrics.

It reads the daemon's store and outbox and writes only into the inbox (through uploads.py) and,
for a redo, one queued row into the store (recond.workflows.redo, issue 25); the daemon stays
the only thing that runs jobs. Nothing here imports torch. The
seed app's routes (POST /, /progress, /result, /output) are aliases of the API's own.
"""

from __future__ import annotations

import asyncio
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
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from sse_starlette import EventSourceResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect

from recond import __version__
from recond.config import Settings
from recond.logging import get_logger
from recond.names import UPLOAD_ID, shown_name, upload_prefix, without_upload_id
from recond.outbox.gallery import entries, render_page
from recond.pipeline.progress import STAGE_WORDS
from recond.status import job_facts, status_report
from recond.store import DONE, DUPLICATE, QUEUED, STATES, Job, Store
from recond.web import pages
from recond.web.events import EventStreams
from recond.web.feed import JobFeed, StoreReader
from recond.web.guards import (
    BearerToken,
    HeadAsGet,
    Refusal,
    SameOriginWrites,
    StreamCounter,
    allowed_hosts,
    declares_body,
)
from recond.web.metrics import Metrics
from recond.web.uploads import Upload, UploadRefused, receive_uploads
from recond.workflows.redo import RedoRefused, plan_redo, queue_redo

ASSETS = Path(__file__).with_name("assets")  # served as they are under /assets/
FAVICON = ASSETS / "favicon.svg"
GALLERY_PAGE_SIZE = 50
# A result folder or file name as the outbox holds them: visible, one path segment.
PLAIN_NAME = re.compile(r"[^./\\\x00-\x1f][^/\\\x00-\x1f]*")

log = get_logger("recond.web")


@dataclass
class JobView(Job):
    """A job as the API shows it: the fields of `reconctl show --json`, plus its result page,
    the picture's name as people read it, and the error in those words."""

    result_url: str | None = None
    name: str = ""
    stage_words: str | None = None  # the stage as a person reads it ("building the mesh")
    shown_error: str | None = None
    queue_position: int | None = None  # 1 for the next job the worker takes; queued jobs only
    background: str | None = None  # these two only on /api/jobs/{id}, from the job's job.json
    stage_seconds: dict[str, float] | None = None


class Problem(BaseModel):
    """Why a request was refused, in one sentence."""

    detail: str


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


def refusals(**reasons: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI answers for refusals, e.g. ``refusals(_404="no such job")``."""
    return {int(code.strip("_")): {"model": Problem, "description": reason}
            for code, reason in reasons.items()}


EVENT_STREAM = {200: {"description": "Server-sent events (text/event-stream), see docs/web.md.",
                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                **refusals(_429="Too many event streams open (web_max_event_streams, "
                                "web_max_event_streams_per_client); Retry-After says when to retry.")}


def create_app(settings: Settings) -> FastAPI:
    """The whole web front end for one installation's settings."""
    outbox = settings.outbox.resolve()
    reader = StoreReader(settings.db_path)
    metrics = Metrics(settings)
    feed = JobFeed(reader, observers=(metrics.observe,))
    upload_slots = asyncio.Semaphore(settings.web_max_uploads)

    def job_view(job: Job, **facts: Any) -> JobView:
        values = {**vars(job), **facts}
        return JobView(**values, result_url=result_url(job, outbox), name=shown_name(job.source),
                       stage_words=STAGE_WORDS.get(job.stage or ""),
                       shown_error=without_upload_id(job.error, job.source) if job.error else None)

    streams = EventStreams(feed, reader, StreamCounter(settings), settings.inbox.resolve(),
                           lambda job: vars(job_view(job)))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher = asyncio.create_task(feed.run())
        try:
            yield
        finally:
            watcher.cancel()
            reader.close()

    app = FastAPIOffline(title="recond", version=__version__, lifespan=lifespan, redoc_url=None,
                         favicon_url="/favicon.ico", description=(
        "Upload photos to recond's inbox and follow them to a 3D result. A POST answers 202 with "
        "an upload id per file; the job appears once the daemon has taken the file "
        "(GET /api/uploads/{upload_id} or its /events stream). The routes of the app recond "
        "replaces (POST /, /progress, /result, /output, /gallery) work as they did."))
    _add_guards(app, settings)
    app.mount("/assets", StaticFiles(directory=ASSETS), name="assets")

    async def read(query: Callable[[Store], Any], default: Any = None) -> Any:
        return await reader.aread(query, default)

    # Pages.

    presets = sorted(settings.presets)
    upload_page_html = pages.upload_page(presets)

    @app.get("/", include_in_schema=False)
    async def upload_page() -> HTMLResponse:
        return HTMLResponse(upload_page_html)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(FAVICON, media_type="image/svg+xml")

    @app.get("/gallery", include_in_schema=False, response_model=None)
    async def gallery(page: int = Query(1, ge=1)) -> HTMLResponse | RedirectResponse:
        offset = (page - 1) * GALLERY_PAGE_SIZE
        total, cards = await read(lambda store: (store.count_finished(), entries(
            store, outbox, GALLERY_PAGE_SIZE, offset)), (0, []))
        pages_in_all = max(1, math.ceil(total / GALLERY_PAGE_SIZE))
        if page > pages_in_all:  # past the end (an old link, a typed number): the last page
            return RedirectResponse(f"/gallery?page={pages_in_all}", status_code=303)
        return HTMLResponse(render_page(
            cards, "/results/", "", "Results", nav=pages.NAV, pager=pages.pager(page, pages_in_all),
            summary=f"{total:,} finished jobs, newest first · page {page} of {pages_in_all}"))

    @app.get("/results/{name}", include_in_schema=False)
    async def result_folder_without_slash(name: str) -> RedirectResponse:
        _result_dir(outbox, name)
        return RedirectResponse(f"/results/{quote(name)}/")  # one address per result page

    @app.get("/results/{name}/", include_in_schema=False)
    @app.get("/result/{name}", include_in_schema=False)  # the seed's address of the same page
    async def result_page(name: str) -> HTMLResponse:
        folder = _result_dir(outbox, name)
        job = await read(lambda store: store.by_result_name(name))
        return HTMLResponse(await asyncio.to_thread(pages.result_page, folder,
                                                    job.source if job else None, presets))

    @app.get("/results/{name}/{file}", include_in_schema=False)
    @app.get("/output/{name}/{file}", include_in_schema=False)  # the seed's address of a file
    async def result_file(name: str, file: str) -> FileResponse:
        return FileResponse(_result_file(outbox, name, file))

    # API.

    async def upload(request: Request) -> Response:
        """Upload one or more pictures (multipart/form-data, any field name, e.g. ``image``).
        All or nothing: a refused file leaves nothing of the request in the inbox."""
        if upload_slots.locked():
            return Refusal(429, f"{settings.web_max_uploads} uploads are already running "
                                "(setting web_max_uploads); retry shortly",
                           declares_body(request.scope), headers={"Retry-After": "1"})
        async with upload_slots:
            try:
                accepted = await receive_uploads(request, settings)
            except UploadRefused as refusal:
                log.info("upload refused", status=refusal.status, reason=str(refusal))
                return Refusal(refusal.status, str(refusal), refusal.body_left)
            except ClientDisconnect:
                log.info("upload abandoned by the client; its files were removed")
                return Response(status_code=400)
        log.info("upload accepted", files=[item.source for item in accepted])
        headers = {"Location": f"/api/uploads/{accepted[0].upload_id}"} if len(accepted) == 1 else {}
        return Response(UploadsAccepted(uploads=[_upload_view(item) for item in accepted])
                        .model_dump_json(), status_code=202, headers=headers,
                        media_type="application/json")

    upload_answers: dict[int | str, dict[str, Any]] = {
        202: {"model": UploadsAccepted, "description": "Accepted: one entry per file, each with "
                                                       "its upload id and where to follow it."},
        **refusals(_400="No file, a bad file name, an empty file or a broken body.",
                   _401="Token missing (when web_token is set).",
                   _403="Sent by a page of another site (not in web_cors_origins).",
                   _408="The body arrived too slowly (web_upload_min_rate, web_upload_seconds).",
                   _413="A file over max_file_bytes or too many files.",
                   _415="Not multipart, or a file that is no picture.",
                   _429="Too many uploads at once; retry after Retry-After seconds.",
                   _503="The inbox is not there (a share that is down).",
                   _507="The inbox could not store the files (a full disk, a read-only share).")}
    for path, summary in (("/api/jobs", "Upload pictures"), ("/", "Upload pictures (the seed's route)")):
        app.add_api_route(path, upload, methods=["POST"], status_code=202, tags=["jobs"],
                          summary=summary, openapi_extra=UPLOAD_SCHEMA, responses=upload_answers,
                          response_model=None)

    @app.post("/api/results/{name}/redo", tags=["jobs"], status_code=202, response_model=None,
              responses=refusals(_400="Not a result folder, or an unknown preset.",
                                 _404="No such result folder."))
    async def redo(request: Request, name: str) -> Any:
        """Queue a result's picture again as a new job (form or JSON field ``preset``; empty: the
        defaults). A form from the result page is sent on to the gallery (303); a script gets
        the queued job (202)."""
        _result_dir(outbox, name)
        form = await request.form() if "form" in request.headers.get("content-type", "") else {}
        chosen = form.get("preset", "")
        preset = chosen if isinstance(chosen, str) else ""
        try:
            job = await asyncio.to_thread(_queue_redo, settings, name, preset)
        except RedoRefused as error:
            raise HTTPException(400, str(error)) from None
        log.info("redo queued", result=name, job=job.id, preset=job.preset)
        if form:
            return RedirectResponse("/gallery", status_code=303)
        return await describe(job)

    @app.get("/api/uploads/{upload_id}", tags=["jobs"],
             responses=refusals(_400="Not an upload id.", _404="No such upload."))
    async def upload_state(upload_id: str) -> UploadState:
        """An upload's job once the daemon made it (``job`` null and state ``waiting`` before)."""
        prefix = _upload_prefix(upload_id)
        if not await asyncio.to_thread(streams.upload_known, prefix):
            raise HTTPException(404, f"no upload {upload_id}")
        job = await read(lambda store: store.by_source_prefix(prefix))
        if job is None:
            return UploadState(upload_id=upload_id, state="waiting", job=None)
        return UploadState(upload_id=upload_id, state=job.state, job=await describe(job))

    @app.get("/api/uploads/{upload_id}/events", tags=["events"], response_class=EventSourceResponse,
             responses={**EVENT_STREAM, **refusals(_400="Not an upload id.")})
    async def upload_events(request: Request, upload_id: str) -> EventSourceResponse:
        """Server-sent events: ``waiting`` until the daemon has the file, then ``job`` events
        (stage, progress, eta_s, queue_position) until the job ends; ``error`` (and the end)
        for an upload that does not exist or left the inbox without becoming a job."""
        _upload_prefix(upload_id)
        return streams.upload(request, upload_id)

    @app.get("/progress/{upload_or_job_id}", tags=["events"], response_class=EventSourceResponse,
             responses={**EVENT_STREAM, **refusals(_400="Neither an upload id nor a job id.",
                                                   _404="No such job.")})
    async def progress(request: Request, upload_or_job_id: str) -> EventSourceResponse:
        """The seed's progress stream: the events of an upload id or of a job id."""
        if UPLOAD_ID.fullmatch(upload_or_job_id):
            return streams.upload(request, upload_or_job_id)
        if upload_or_job_id.isdigit():
            return await job_events(request, int(upload_or_job_id))
        raise HTTPException(400, "give an upload id (16 hex digits) or a job id (a number)")

    @app.get("/api/jobs", tags=["jobs"])
    async def list_jobs(state: str | None = Query(None, pattern=f"^({'|'.join(STATES)})$"),
                        limit: int = Query(50, ge=1, le=1000)) -> list[JobView]:
        """Jobs newest first (the fields of `reconctl jobs --json`)."""
        jobs = await read(lambda store: store.jobs(state, limit), [])
        return [job_view(job) for job in jobs]

    async def describe(job: Job) -> JobView:
        """One job with everything: its job.json's facts and its place in the queue."""
        facts = await asyncio.to_thread(job_facts, job)
        position = (await read(lambda store: store.queued_before(job.id), 0) + 1
                    if job.state == QUEUED else None)
        return job_view(job, **{key: facts[key] for key in ("background", "stage_seconds")},
                        queue_position=position)

    @app.get("/api/jobs/{job_id}", tags=["jobs"], responses=refusals(_404="No such job."))
    async def show_job(job_id: int) -> JobView:
        """One job (the fields of `reconctl show --json`)."""
        job = await read(lambda store: store.get(job_id))
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return await describe(job)

    @app.get("/api/jobs/{job_id}/events", tags=["events"], response_class=EventSourceResponse,
             responses={**EVENT_STREAM, **refusals(_404="No such job.")})
    async def job_events(request: Request, job_id: int) -> EventSourceResponse:
        """Server-sent ``job`` events for one job until it is done, failed or a duplicate."""
        if await read(lambda store: store.get(job_id)) is None:
            raise HTTPException(404, f"no job {job_id}")
        return streams.job(request, job_id)

    @app.get("/api/events", tags=["events"], response_class=EventSourceResponse,
             responses=EVENT_STREAM)
    async def all_events(request: Request) -> EventSourceResponse:
        """Server-sent ``job`` events for every change of any job, for as long as you listen."""
        return streams.everything(request)

    @app.get("/api/status", tags=["operations"])
    async def status() -> dict[str, Any]:
        """The document `reconctl status --json` prints."""
        return await asyncio.to_thread(status_report, settings)

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"description": "Prometheus text format.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}})
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


def _add_guards(app: FastAPI, settings: Settings) -> None:
    """The ASGI layers every request passes, outermost last: an unknown Host is refused before
    anything else, CORS answers preflights (which carry no token), writes from other sites and
    requests without the token are refused, and HEAD is answered as GET without a body."""
    app.add_middleware(HeadAsGet)
    if settings.web_token:
        app.add_middleware(BearerToken, token=settings.web_token)
    app.add_middleware(SameOriginWrites, cors_origins=settings.web_cors_origins)
    if settings.web_cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.web_cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization"])
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(settings),
                       www_redirect=False)


UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "properties": {"image": {"type": "array", "items": {
        "type": "string", "format": "binary"}}}}}}}}


def _queue_redo(settings: Settings, name: str, preset: str) -> Job:
    """A redo queued in the job database beside the daemon (recond.workflows.redo)."""
    planned = plan_redo(settings, name, preset, {})
    store = Store(settings.db_path)
    try:
        return queue_redo(store, planned)
    finally:
        store.close()


def result_url(job: Job, outbox: Path) -> str | None:
    """The result page of a done job, or of the earlier job a duplicate points at."""
    if job.state == DONE and job.result_name:
        return f"/results/{quote(job.result_name)}/"
    if job.state == DUPLICATE and job.output and Path(job.output).parent == outbox:
        return f"/results/{quote(Path(job.output).name)}/"
    return None


def _upload_view(upload: Upload) -> UploadView:
    return UploadView(upload_id=upload.upload_id, name=upload.name, source=upload.source,
                      bytes=upload.size, status_url=f"/api/uploads/{upload.upload_id}",
                      events_url=f"/api/uploads/{upload.upload_id}/events")


def _upload_prefix(upload_id: str) -> str:
    if not UPLOAD_ID.fullmatch(upload_id):
        raise HTTPException(400, "an upload id is 16 lowercase hex digits")
    return upload_prefix(upload_id)


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
