"""The worker: one thread that owns the warm pipeline and runs queued jobs oldest first.

It publishes through ``Pipeline.run`` (which renames a complete folder into the outbox), then
removes the inbox original; a failure moves the original to ``inbox/failed/`` with a note
saying why. Missing weights never fail a job: the jobs wait while the worker retries the load.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recond.config import JobSettings, ModelSettings, Settings, part_of
from recond.errors import describe_failure, loading_fix
from recond.gallery import write_gallery
from recond.intake import FAILED_FOLDER
from recond.logging import get_logger
from recond.pipeline.contract import ProgressCallback, WarmPipeline
from recond.pipeline.progress import Progress
from recond.store import Job, Store

log = get_logger("recond.worker")

PROGRESS_WRITE_SECONDS = 0.5  # how often a running job's progress reaches the database


class JobCancelled(BaseException):
    """Raised from the progress callback so a stopping daemon leaves the pipeline between stages.

    A BaseException, like asyncio.CancelledError, so that a stage's ``except Exception`` cannot
    turn a shutdown into a failed job.
    """


def build_pipeline(settings: ModelSettings,
                   report: Callable[[str], None] = lambda line: None,
                   stage_history: Path | None = None) -> WarmPipeline:
    """The real, warm pipeline (imported here: torch loads in the worker thread, not at start-up),
    after the first start's downloads (``report`` gets their progress lines); ``stage_history``
    is where jobs' stage seconds are kept for the ETA (the state dir)."""
    from recond.downloads import fetch_missing_models
    from recond.pipeline.runner import Pipeline

    fetch_missing_models(settings, report)
    return Pipeline(settings, stage_history=stage_history)


class Worker:
    """Runs jobs from ``store`` with a pipeline built by ``pipeline_factory(model settings)``."""

    def __init__(self, settings: Settings, store: Store,
                 pipeline_factory: Callable[[ModelSettings], WarmPipeline] = build_pipeline) -> None:
        self.settings = settings
        self.store = store
        self.pipeline_factory = pipeline_factory
        self.pipeline: WarmPipeline | None = None
        self.busy = False
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._new_settings: Settings | None = None
        self._next_load = 0.0
        self._thread = threading.Thread(target=self._loop, name="recond-worker", daemon=True)

    # Control, from other threads.

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking jobs; a running job is cancelled at its next progress report and requeued."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def reload(self, settings: Settings) -> None:
        """Use new settings from the next job on; retry the model load now if it is missing."""
        self._new_settings = settings
        self._wake.set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # The loop.

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            self._apply_new_settings()
            if self.pipeline is None:
                if time.monotonic() >= self._next_load:
                    self._load_model()
                if self.pipeline is None:
                    self._wake.wait(max(0.0, self._next_load - time.monotonic()))
                    continue
            job = self.store.claim_next()
            if job is None:
                self._wake.wait(5.0)  # intake wakes us on every new job; this is a safety net
                continue
            self.busy = True
            try:
                self.process(job)
            finally:
                self.busy = False

    def _apply_new_settings(self) -> None:
        settings, self._new_settings = self._new_settings, None
        if settings is None:
            return
        model_changed = part_of(settings, ModelSettings) != part_of(self.settings, ModelSettings)
        self.settings = settings
        if self.pipeline is None or model_changed:
            self.pipeline, self._next_load = None, 0.0

    def _load_model(self) -> None:
        self.store.daemon_update(model_status="loading", model_detail=self.settings.model)
        started = time.monotonic()
        try:
            pipeline = self.pipeline_factory(part_of(self.settings, ModelSettings))
        except Exception as error:  # any failure here means "no model"; jobs wait, nothing fails
            fix = loading_fix(error)
            detail = f"{' '.join(str(error).split())} -- to fix: {fix}"
            self._next_load = time.monotonic() + self.settings.model_retry_seconds
            self.store.daemon_update(model_status="missing", model_detail=detail, device=None)
            log.error("model not loaded; jobs stay queued", model=self.settings.model,
                      error=str(error), fix=fix, retry_in_s=self.settings.model_retry_seconds)
            return
        self.pipeline = pipeline
        device = pipeline.device
        self.store.daemon_update(model_status="ready", device=device, model_detail=(
            f"{pipeline.model_id} (pictures without transparency: {pipeline.background_method})"))
        log.info("model loaded", model=self.settings.model, device=device,
                 seconds=round(time.monotonic() - started, 2))

    # One job.

    def process(self, job: Job) -> None:
        """Run one claimed job to done, failed or (when stopping) back to queued."""
        inbox, outbox = self.settings.inbox.resolve(), self.settings.outbox.resolve()
        source, result_dir = inbox / job.source, outbox / job.result_name
        if result_dir.is_dir():
            # Published before a crash stopped us from recording it: finish, never redo.
            self.store.finish(job.id, result_dir, job.warnings + _remove_original(source))
            log.info("job done (already published)", job=job.id, file=job.source,
                     output=str(result_dir))
            return
        partial_dir = outbox / f".{job.result_name}.partial"
        shutil.rmtree(partial_dir, ignore_errors=True)  # left by a crash mid-job
        if not inbox.is_dir():
            # A network share that went away: wait for it rather than fail every queued job.
            self.store.requeue(job.id)
            log.warning("inbox missing; job waits", job=job.id, inbox=str(inbox))
            self._stopping.wait(5.0)
            return
        if not source.is_file():
            self.store.fail(job.id, "the file was removed from the inbox before it was processed")
            log.warning("job failed", job=job.id, file=job.source, error="file removed")
            return
        log.info("job started", job=job.id, file=job.source, attempt=job.attempts)
        started = time.monotonic()
        assert self.pipeline is not None, "process() runs only once the model is loaded"
        try:
            result = self.pipeline.run(source, outbox, job.result_name,
                                       part_of(self.settings, JobSettings),
                                       progress=self._progress_reporter(job))
        except JobCancelled:
            shutil.rmtree(partial_dir, ignore_errors=True)
            self.store.requeue(job.id)
            log.info("job requeued (shutting down)", job=job.id, file=job.source)
            return
        except Exception as error:
            reason, user_caused = describe_failure(error)
            log.error("job failed", job=job.id, file=job.source, error=reason,
                      seconds=round(time.monotonic() - started, 2), exc_info=not user_caused)
            self.fail_job(job, reason)
            return
        self.store.finish(job.id, result.result_dir, [*result.warnings, *_remove_original(source)])
        write_gallery(outbox, self.store)
        log.info("job done", job=job.id, file=job.source, output=str(result.result_dir),
                 seconds=round(time.monotonic() - started, 2), warnings=len(result.warnings))

    def fail_job(self, job: Job, reason: str) -> None:
        """Record the failure and move the original to inbox/failed/ with a note beside it."""
        moved = move_to_failed(self.settings.inbox.resolve(), job, reason)
        self.store.fail(job.id, reason, kept_at=moved)

    def _progress_reporter(self, job: Job) -> ProgressCallback:
        last: dict[str, Any] = {"stage": None, "written": 0.0, "decile": -1}

        def report(progress: Progress) -> None:
            if self._stopping.is_set():
                raise JobCancelled()
            now = time.monotonic()
            decile = int(progress.overall * 10)
            if progress.stage != last["stage"] or now - last["written"] >= PROGRESS_WRITE_SECONDS:
                self.store.report_progress(job.id, progress.stage, progress.overall, progress.eta_s)
                last["written"] = now
            if progress.stage != last["stage"]:
                log.info("job stage", job=job.id, file=job.source, stage=progress.stage,
                         percent=round(progress.overall * 100), eta_s=_rounded(progress.eta_s))
            elif decile != last["decile"]:
                log.info("job progress", job=job.id, file=job.source, stage=progress.stage,
                         percent=round(progress.overall * 100), eta_s=_rounded(progress.eta_s))
            last["stage"], last["decile"] = progress.stage, decile

        return report


def move_to_failed(inbox: Path, job: Job, reason: str) -> Path | None:
    """Move a failed job's original to inbox/failed/ and write ``<name>.error.txt`` beside it."""
    source = inbox / job.source
    if not source.is_file():
        return None
    failed = inbox / FAILED_FOLDER
    failed.mkdir(exist_ok=True)
    target = failed / source.name
    if target.exists():
        target = failed / f"{source.stem}-job{job.id}{source.suffix}"
    os.replace(source, target)
    note = target.with_name(target.name + ".error.txt")
    note.write_text(
        f"recond could not process {job.source} (job {job.id}, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}):\n\n{reason}\n\n"
        f"To try again, move {target.name} back into the inbox (or run `reconctl retry {job.id}`).\n",
        encoding="utf-8")
    return target


def _remove_original(source: Path) -> list[str]:
    """Remove the inbox original (its bytes are source.<ext> in the result); a warning if we cannot."""
    try:
        source.unlink(missing_ok=True)
    except OSError as error:
        log.warning("original not removed from the inbox", file=str(source), error=str(error))
        return [f"the original could not be removed from the inbox: {error}"]
    return []


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)
