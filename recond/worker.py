"""The worker: one thread that owns the warm pipeline and runs queued jobs oldest first.

A job owns the exact bytes it was queued with: they are checked before the run, the pipeline
builds the result in a private staging folder, the worker publishes it (``recond.layout``), and
the inbox original (and any byte-identical copies waiting on it) is removed only while it still
holds the published bytes. A failure moves the original to ``inbox/failed/`` with a note. Faults
of the machine rather than of the picture (missing weights, a full outbox, a vanished share, a
busy database) never fail a job: the queue waits, and one error never ends the thread.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from recond import dropped, layout
from recond.folder_identity import FolderIdentity
from recond.config import JobSettings, ModelSettings, Settings, part_of
from recond.errors import RELOAD_EITHER_WAY, StageTimedOut, describe_failure, loading_fix
from recond.gallery import write_gallery
from recond.logging import Repeats, get_logger
from recond.outbox_gate import OutboxFault, OutboxGate
from recond.pipeline.contract import ProgressCallback, SourcePicture, WarmPipeline
from recond.pipeline.progress import Progress
from recond.set_aside import set_aside
from recond.store import QUEUED, RUNNING, Job, Store

log = get_logger("recond.worker")

PROGRESS_WRITE_SECONDS = 0.5  # how often a running job's progress reaches the database
ERROR_PAUSE_SECONDS = 2.0  # after an unexpected error in the loop, before the next step
WAIT_SECONDS = 5.0  # between checks while the outbox is paused or the inbox share is gone


class JobCancelled(BaseException):
    """Raised from the progress callback so a stopping daemon leaves the pipeline between stages.

    A BaseException, like asyncio.CancelledError, so that a stage's ``except Exception`` cannot
    turn a shutdown into a failed job.
    """


class JobWaits(Exception):
    """The job cannot run now for a reason outside its picture; it goes back to the queue."""


class JobEnded(Exception):
    """The job ended before its run (its file was removed, changed or unreadable); recorded."""


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


def load_main_thread_libraries() -> None:
    """Import here, on the main thread, the pipeline's libraries whose first import must not be on
    the worker thread, which ends before the process does: pymeshlab (recond.pipeline.topology
    says why). The rest of the pipeline still loads on the worker thread, when it is built."""
    importlib.import_module("pymeshlab")


class Worker:
    """Runs jobs from ``store`` with a pipeline built by ``pipeline_factory(model settings)``.

    ``on_file_changed(path)`` is told about an inbox file whose bytes changed after it was
    queued (the daemon hands it to intake, which queues the new bytes once they settle).
    ``how_to_reload`` is how the fix for a model that did not load says to retry
    (errors.reload_command: systemctl for the service, kill -HUP in a terminal).
    """

    def __init__(self, settings: Settings, store: Store,
                 pipeline_factory: Callable[[ModelSettings], WarmPipeline] = build_pipeline,
                 on_file_changed: Callable[[Path], None] = lambda path: None,
                 how_to_reload: str = RELOAD_EITHER_WAY) -> None:
        self.settings = settings
        self.how_to_reload = how_to_reload
        self.store = store
        self.pipeline_factory = pipeline_factory
        self.on_file_changed = on_file_changed
        self.pipeline: WarmPipeline | None = None
        self.busy = False
        self.paused: str | None = None  # why the queue waits (outbox full or unwritable)
        self.owner = layout.owner_tag(str(settings.state_dir.resolve()))
        self.gate = OutboxGate(settings.outbox.resolve(), self.owner, settings.state_dir)
        self.inbox_identity = FolderIdentity("inbox", self.inbox, settings.state_dir)
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._new_settings: Settings | None = None
        self._next_load = 0.0
        self._repeats = Repeats()
        self._stranded: set[int] = set()  # interrupted jobs the store could not put back yet
        self._thread = threading.Thread(target=self._loop, name="recond-worker", daemon=True)

    @property
    def inbox(self) -> Path:
        return self.settings.inbox.resolve()

    @property
    def outbox(self) -> Path:
        return self.settings.outbox.resolve()

    # Control, from other threads.

    def recover(self) -> None:
        """After a crash: finish jobs whose result was published, requeue or fail the others,
        and remove this daemon's leftover staging folders. Call before ``start``."""
        self.inbox_identity.check()  # the share, as mounted at start-up, is the one
        self.gate.identity.check()
        requeued, exhausted = self.store.recover_after_crash(
            self.settings.max_attempts, published=lambda job: self._published(job) is not None)
        for job in requeued:
            log.warning("job requeued after a crash", job=job.id, file=job.source, attempts=job.attempts)
        for job in exhausted:
            log.error("job failed", job=job.id, file=job.source, error=job.error)
            self.fail_job(job, job.error or "")
        for folder in layout.clean_staging(self.outbox, self.owner):
            log.info("removed a staging folder left by a crash", folder=str(folder))

    def start(self) -> None:
        """Start the worker thread; call from the main thread (load_main_thread_libraries)."""
        load_main_thread_libraries()
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
            try:
                self._step()
            except Exception as error:  # one store call or one job's error never ends the worker
                self._repeats.log(log.exception, "worker step failed; carrying on", error=str(error))
                self._stopping.wait(ERROR_PAUSE_SECONDS)

    def _step(self) -> None:
        self._apply_new_settings()
        for job_id in sorted(self._stranded):
            self._put_back(job_id)
        if self.pipeline is None:
            if time.monotonic() >= self._next_load:
                self._load_model()
            if self.pipeline is None:
                self._wake.wait(max(0.0, self._next_load - time.monotonic()))
            return
        if self.paused and not self._outbox_cleared():
            self._stopping.wait(WAIT_SECONDS)
            return
        replaced = self.gate.identity.check()
        if replaced:  # nothing is built for, let alone published into, a bare mount point
            self._pause(OutboxFault(replaced, False, 0))
            return
        job = self.store.claim_next()
        if job is None:
            self._wake.wait(5.0)  # intake wakes us on every new job; this is a safety net
            return
        self.busy = True
        try:
            self.process(job)
        except Exception:
            self._put_back(job.id)
            raise
        finally:
            self.busy = False
        after = self.store.get(job.id)
        if self.paused or (after is not None and after.state == QUEUED):
            self._stopping.wait(WAIT_SECONDS)  # it waits for the outbox or the share: so do we

    def _put_back(self, job_id: int) -> None:
        """A job an unexpected error interrupted returns to the queue (not a crash of it). When
        the store cannot take even that (a full state disk), the job is remembered and put back
        before the next one is claimed, so it is never left "running" (issue 18); a result it
        published is then found and recorded (``process``)."""
        self._stranded.add(job_id)
        current = self.store.get(job_id)
        if current is not None and current.state == RUNNING:
            self.store.requeue(job_id)
        self._stranded.discard(job_id)

    def _apply_new_settings(self) -> None:
        settings, self._new_settings = self._new_settings, None
        if settings is None:
            return
        model_changed = part_of(settings, ModelSettings) != part_of(self.settings, ModelSettings)
        if settings.inbox != self.settings.inbox:
            self.inbox_identity = FolderIdentity("inbox", settings.inbox.resolve(), settings.state_dir)
        if settings.outbox != self.settings.outbox:
            self.gate = OutboxGate(settings.outbox.resolve(), self.owner, settings.state_dir)
        self.settings = settings
        if self.pipeline is None or model_changed:
            self.pipeline, self._next_load = None, 0.0

    def _load_model(self) -> None:
        self.store.daemon_update(model_status="loading", model_detail=self.settings.model)
        started = time.monotonic()
        try:
            pipeline = self.pipeline_factory(part_of(self.settings, ModelSettings))
        except Exception as error:  # any failure here means "no model"; jobs wait, nothing fails
            fix = loading_fix(error, self.how_to_reload)
            detail = f"{' '.join(str(error).split())} -- to fix: {fix}"
            self._next_load = time.monotonic() + self.settings.model_retry_seconds
            self.store.daemon_update(model_status="missing", model_detail=detail, device=None, dtype=None)
            log.error("model not loaded; jobs stay queued", model=self.settings.model,
                      error=str(error), fix=fix, retry_in_s=self.settings.model_retry_seconds)
            return
        self.pipeline = pipeline
        device = pipeline.device
        self.store.daemon_update(
            model_status="ready", device=device, dtype=str(pipeline.dtype),
            model_detail=f"{pipeline.model_id} (pictures without transparency: {pipeline.background_method})")
        log.info("model loaded", model=self.settings.model, device=device, dtype=str(pipeline.dtype),
                 seconds=round(time.monotonic() - started, 2))

    # One job: check its bytes, build and publish, then record the outcome.

    def process(self, job: Job) -> None:
        """Run one claimed job to done, failed or back to the queue."""
        published = self._published(job)
        if published is not None:  # renamed into place just before a crash: record, never redo
            self._finish(job, published, job.warnings, job.sha256, started=None)
        else:
            self._run(job)

    def _run(self, job: Job) -> None:
        """Check the job's bytes, build and publish its result, and record the outcome."""
        started = time.monotonic()
        pipeline = self.pipeline
        assert pipeline is not None, "jobs run only once the model is loaded"
        try:
            picture = self._verified_source(job)
            log.info("job started", job=job.id, file=job.source, attempt=job.attempts)
            result, folder = layout.build_result(
                self.outbox, job.result_name, f"{self.owner}-{job.id}",
                lambda staging: pipeline.run(picture, staging, part_of(self.settings, JobSettings),
                                             progress=self._progress_reporter(job)),
                source_mode=picture.mode, before_publish=self.gate.identity.raise_if_replaced)
        except JobEnded:
            pass  # recorded where it was found out
        except (JobCancelled, JobWaits) as interruption:
            self.store.requeue(job.id)
            log.info("job requeued", job=job.id, file=job.source, reason=type(interruption).__name__)
        except Exception as error:
            self._job_error(job, error, started)
        else:
            self._finish(job, folder, result.warnings, result.record.get("sha256", job.sha256), started)

    def _verified_source(self, job: Job) -> SourcePicture:
        """The job's picture: its bytes read once, from one descriptor opened beneath the inbox
        (recond.dropped), and checked to be exactly the job's bytes; the pipeline gets these
        bytes and never opens the file. Raises JobEnded when the job ended here (removed,
        unreadable, too large, changed) and JobWaits when the inbox is away."""
        self._check_inbox_present(job)
        source = job.source_name
        kind = dropped.kind(self.inbox, source)
        readable = source
        if kind == dropped.LINK and self.settings.follow_inbox_links:
            readable = dropped.link_target_inside(self.inbox, source) or source
        if kind is None:
            self._fail_removed(job)
            raise JobEnded()
        try:
            read = dropped.read(self.inbox, readable, self.settings.max_file_bytes, keep=True)
        except (dropped.TooLarge, TimeoutError) as error:  # it would hold up every other picture
            self.fail_job(job, str(error))
            raise JobEnded()
        except dropped.NotARegularFile as error:
            self.fail_job(job, f"{job.source} is no longer a regular file ({error}); recond reads only regular files")
            raise JobEnded()
        except PermissionError as error:
            self.fail_job(job, f"recond may not read {job.source} ({error.strerror}); fix its permissions, then retry")
            raise JobEnded()
        except OSError as error:  # EIO, ESTALE ... from a share in trouble: wait for it
            log.warning("inbox file unreadable for now; job waits", job=job.id, file=job.source,
                        error=str(error))
            raise JobWaits() from error
        if read.sha256 != job.sha256:
            self.store.fail(job.id, "the file changed after it was queued; its new contents "
                                    "are queued as a new job once they stop changing")
            log.warning("job replaced: file changed after it was queued", job=job.id, file=job.source)
            self.on_file_changed(self.inbox / source)
            raise JobEnded()
        where = PurePosixPath(readable)
        return SourcePicture(where.name, read.data, read.mode, folder=where.parent.name)

    def _fail_removed(self, job: Job) -> None:
        """The file is gone from its inbox path: removed, or moved to failed/ by a run that was
        killed before it could record that (then the record learns where it lies)."""
        kept = layout.find_in_failed(self.inbox, job.source_name, job.id, job.sha256, job.size)
        if kept is not None:
            self.store.fail(job.id, "recond stopped after moving the file to failed/ and before "
                            f"recording it; the reason is in {layout.error_note(kept).name}", kept_at=kept)
            return
        self.store.fail(job.id, "the file was removed from the inbox before it was processed")
        log.warning("job failed", job=job.id, file=job.source, error="file removed")

    def _check_inbox_present(self, job: Job) -> None:
        """A share that went away (missing, erroring, or a bare mount point without the inbox's
        marker) makes jobs wait rather than fail as "removed"."""
        replaced = self.inbox_identity.check()
        if replaced:
            log.warning("inbox is not the folder recond started with; job waits", job=job.id,
                        reason=replaced)
            raise JobWaits()

    def _job_error(self, job: Job, error: Exception, started: float) -> None:
        fault = self.gate.fault_in(error)
        if fault:  # the job goes back first, so whoever sees the pause sees it queued
            self.store.requeue(job.id)
            self._pause(fault)
            return
        if isinstance(error, StageTimedOut) and job.attempts < self.settings.max_attempts:
            self.store.retry_later(job.id, str(error))
            log.warning("job requeued: a stage ran past its time limit", job=job.id, file=job.source,
                        error=str(error), attempt=job.attempts, max_attempts=self.settings.max_attempts)
            return
        reason, user_caused = describe_failure(error)
        log.error("job failed", job=job.id, file=job.source, error=reason,
                  seconds=round(time.monotonic() - started, 2), exc_info=not user_caused)
        self.fail_job(job, reason)

    def _finish(self, job: Job, folder: Path, warnings: list[str], published_sha256: str,
                started: float | None) -> None:
        """Record the job done, then remove its original and the copies that waited on it, each
        only while it holds the published bytes."""
        notes = list(warnings)
        if published_sha256 != job.sha256:
            notes.append("the file changed just before processing; the result holds its newer contents")
        notes += self._remove_original(job, published_sha256)
        self.store.finish(job.id, folder, notes,
                          sha256=published_sha256 if published_sha256 != job.sha256 else None)
        self._release_duplicates(job, folder)
        if self.gate.identity.check() is None:  # never into a bare mount point
            write_gallery(self.outbox, self.store)
        seconds = None if started is None else round(time.monotonic() - started, 2)
        log.info("job done" if started is not None else "job done (already published)",
                 job=job.id, file=job.source, output=str(folder), seconds=seconds,
                 warnings=len(warnings))

    def _remove_original(self, job: Job, sha256: str) -> list[str]:
        source = job.source_name
        kind = dropped.kind(self.inbox, source)
        if kind is None:
            return []
        readable = dropped.link_target_inside(self.inbox, source) if kind == dropped.LINK else None
        try:
            if not dropped.remove_if_holds(self.inbox, source, sha256, job.size, readable):
                self.on_file_changed(self.inbox / source)
                return ["the file in the inbox changed while it was processed; its new contents "
                        "stay in the inbox and become a new job"]
        except OSError as error:
            log.warning("original not removed from the inbox", file=job.source, error=str(error))
            return [f"the original could not be removed from the inbox: {error}"]
        layout.remove_emptied_folders(self.inbox, source)
        return []

    def _release_duplicates(self, job: Job, folder: Path) -> None:
        """Copies recorded while the job was active: removed now that a result holds their bytes."""
        for copy in self.store.duplicates_of(job.id):
            try:
                if layout.result_holds(folder, copy.sha256) and dropped.remove_if_holds(
                        self.inbox, copy.source_name, copy.sha256, copy.size):
                    layout.remove_emptied_folders(self.inbox, copy.source_name)
                    log.info("duplicate removed from the inbox", job=copy.id, file=copy.source,
                             output=str(folder))
            except OSError as error:
                log.warning("duplicate not removed from the inbox", job=copy.id, file=copy.source,
                            error=str(error))

    def _published(self, job: Job) -> Path | None:
        if not job.result_name:
            return None
        return layout.find_published(self.outbox, job.result_name, job.sha256)

    def fail_job(self, job: Job, reason: str) -> None:
        """Record the failure and move the original to inbox/failed/ with a note beside it."""
        set_aside(self.store, self.inbox, job, reason)

    # The outbox as a resource: full or unwritable pauses the queue.

    def _pause(self, fault: OutboxFault) -> None:
        if self.paused is None:
            log.warning("queue paused: jobs stay queued until the outbox can take results",
                        reason=fault.reason)
        self.gate.fault, self.paused = fault, fault.reason
        self.store.daemon_update(worker_warning=f"queue paused: {fault.reason}")

    def _outbox_cleared(self) -> bool:
        if not self.gate.cleared():
            return False
        log.info("queue resumed: the outbox takes results again", outbox=str(self.outbox))
        self.paused = None
        self.store.daemon_update(worker_warning=None)
        return True

    def _progress_reporter(self, job: Job) -> ProgressCallback:
        last: dict[str, Any] = {"stage": None, "written": 0.0, "decile": -1}

        def report(progress: Progress) -> None:
            if self._stopping.is_set():
                raise JobCancelled()
            now = time.monotonic()
            decile = int(progress.overall * 10)
            if progress.stage != last["stage"] or now - last["written"] >= PROGRESS_WRITE_SECONDS:
                try:
                    self.store.report_progress(job.id, progress.stage, progress.overall, progress.eta_s,
                                               progress.stage_started_at, progress.stage_expected_s)
                    last["written"] = now
                except sqlite3.Error as error:  # a busy database never fails the job it reports on
                    log.warning("progress not recorded", job=job.id, error=str(error))
            if progress.stage != last["stage"]:
                log.info("job stage", job=job.id, file=job.source, stage=progress.stage,
                         percent=round(progress.overall * 100), eta_s=_rounded(progress.eta_s))
            elif decile != last["decile"]:
                log.info("job progress", job=job.id, file=job.source, stage=progress.stage,
                         percent=round(progress.overall * 100), eta_s=_rounded(progress.eta_s))
            last["stage"], last["decile"] = progress.stage, decile

        return report


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)
