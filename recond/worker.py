"""The worker: one thread that decides which jobs are in flight, oldest first, and records them.

Each job runs in two parts (issue 14) on an executor (recond/executors/): the device part on
the warm model, then the host part on a CPU; with host processes, up to ``host_workers + 1``
jobs are in flight at once, and the worker alone touches the store, the inbox and the outbox.
A job owns the exact bytes it was queued with: they are checked before the run, the host part
builds the result in a private staging folder, the worker publishes it (``recond.outbox.publish``), and
the inbox original (and any byte-identical copies waiting on it) is removed only while it still
holds the published bytes. A failure moves the original to ``inbox/failed/`` with a note. Faults
of the machine rather than of the picture (missing weights, a full outbox, a vanished share, a
busy database) never fail a job: the queue waits, and one error never ends the thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from recond.config import JobSettings, ModelSettings, Settings
from recond.errors import (
    RELOAD_EITHER_WAY,
    HostStopped,
    StageTimedOut,
    describe_failure,
    loading_fix,
)
from recond.executors import (
    DeviceTask,
    Executor,
    HostTask,
    JobCancelled,
    PartProgress,
    PipelineFactory,
    ProgressSink,
    WorkerLost,
    executor_shape,
    runs_in_daemon,
)
from recond.inbox import dropped
from recond.inbox.failed import error_note, find_in_failed, remove_emptied_folders
from recond.inbox.set_aside import set_aside
from recond.logging import Repeats, get_logger
from recond.outbox import leftovers, publish
from recond.outbox.gallery import write_gallery
from recond.outbox.gate import OutboxFault, OutboxGate
from recond.pipeline.contract import (
    JobResult,
    ProgressCallback,
    SourcePicture,
    WarmPipeline,
)
from recond.pipeline.handoff import DeviceOutput
from recond.pipeline.progress import (
    WAITING_FOR_HOST,
    EtaEstimate,
    Progress,
    expected_stage_seconds,
    remember_stage_seconds,
)
from recond.pipeline.record import read_record, write_record
from recond.pipeline.warm import build_pipeline, load_main_thread_libraries
from recond.shares.identity import FolderIdentity
from recond.shares.lease import InboxLease, LeaseLost
from recond.store import QUEUED, RUNNING, Job, Store
from recond.workflows import events
from recond.workflows.presets import job_settings, preset_of
from recond.workflows.redo import redone_from

log = get_logger("recond.worker")

PROGRESS_WRITE_SECONDS = 0.5  # how often a running job's progress reaches the database
ERROR_PAUSE_SECONDS = 2.0  # after an unexpected error in the loop, before the next step
WAIT_SECONDS = 5.0  # between checks while the outbox is paused or the inbox share is gone
HOST_IMPORT_WAIT_SECONDS = 30.0  # at most, after the model loaded, for the host processes' imports
HOST_STOPS_SHOWN = 5  # the latest host processes stopped past a stage's limit, in the daemon row
# Worker.stop waits this long for the thread: cancelling a connect is at once, a device part on
# a CPU ends at its next progress report (seconds, longer on a loaded machine), closing a Ray
# executor is bounded (ray.CLOSE_SECONDS). Below the unit's TimeoutStopSec=180, so that recond
# still records its stop itself; a job left running is recovered at the next start.
STOP_SECONDS = 150.0
LOST_CHECK_SECONDS = 5.0  # between questions to a lost Ray cluster


class JobWaits(Exception):
    """The job cannot run now for a reason outside its picture; it goes back to the queue."""


class JobEnded(Exception):
    """The job ended before its run (its file was removed, changed or unreadable); recorded."""


@dataclass
class InFlight:
    """A claimed job and the part of it running now (device, then host)."""

    job: Job
    source: SourcePicture  # the checked bytes; their mode bounds the result's permissions
    settings: JobSettings
    facts: dict[str, Any]  # what job.json adds about the workflow: preset, overrides, redone from
    started: float
    eta: EtaEstimate
    expected_s: dict[str, float]  # stage seconds this job's ETA and stage limits come from
    phase: str = "device"
    future: Future[Any] | None = None
    staging: ExitStack = field(default_factory=ExitStack)  # the staging folder, once the host part has one
    folder: Path | None = None


def build_executor(settings: Settings, pipeline_factory: PipelineFactory,
                   on_progress: ProgressSink, on_status: Callable[[str], None] = lambda line: None) -> Executor:
    """The executor the settings ask for: on a Ray cluster (executor = "ray"), in the worker
    thread (host_workers = 0) or with a pool of host processes beside a warm model here.
    ``on_status`` gets the Ray executor's lines while it connects, for status."""
    if settings.executor == "ray":
        from recond.executors.ray import RayExecutor

        return RayExecutor(settings, pipeline_factory, on_progress, on_status)
    workers = settings.resolved_host_workers()
    if workers == 0:
        from recond.executors.inline import InlineExecutor

        return InlineExecutor(settings, pipeline_factory, on_progress)
    from recond.executors.local import LocalExecutor

    return LocalExecutor(settings, pipeline_factory, on_progress, workers)


class Worker:
    """Runs jobs from ``store`` with a pipeline built by ``pipeline_factory(model settings)``.

    It alone decides what is in flight (STYLE.md habit 13): it claims a job only while the
    executor (recond/executors/) has room, hands it the picture's bytes for the device part,
    gives the hand-off to a host part writing into a staging folder, and publishes, fails or
    requeues each job here. ``on_file_changed(path)`` is told about an inbox file whose bytes
    changed after it was queued (the daemon hands it to intake, which queues the new bytes once
    they settle).
    ``how_to_reload`` is how the fix for a model that did not load says to retry
    (errors.reload_command: systemctl for the service, kill -HUP in a terminal).
    """

    def __init__(self, settings: Settings, store: Store,
                 pipeline_factory: Callable[[ModelSettings], WarmPipeline] = build_pipeline,
                 on_file_changed: Callable[[Path], None] = lambda path: None,
                 how_to_reload: str = RELOAD_EITHER_WAY,
                 on_owed: Callable[[], None] = lambda: None,
                 inbox_lease: InboxLease | None = None) -> None:
        self.settings = settings
        self.inbox_lease = inbox_lease  # the daemon's claim on the inbox: publish only while ours
        self.how_to_reload = how_to_reload
        self.store = store
        self.pipeline_factory = pipeline_factory
        self.on_file_changed = on_file_changed
        self.on_owed = on_owed  # a hook or webhook delivery was recorded (recond/workflows/)
        self.executor: Executor | None = None
        self.in_flight: dict[int, InFlight] = {}
        self.paused: str | None = None  # why the queue waits (outbox full or unwritable)
        self.owner = publish.owner_tag(str(settings.state_dir.resolve()))
        self.gate = OutboxGate(settings.outbox.resolve(), self.owner, settings.state_dir,
                               settings.adopt_changed_folders)
        self.inbox_identity = FolderIdentity("inbox", self.inbox, settings.state_dir,
                                             settings.adopt_changed_folders)
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._new_settings: Settings | None = None
        self._rebuild = False  # the model or the executor's settings changed: once idle, rebuild
        self._next_load = 0.0
        self._repeats = Repeats()
        self._stranded: set[int] = set()  # interrupted jobs the store could not put back yet
        self.exit_reason: str | None = None  # why the worker ended the run itself (its cluster is back)
        self._stuck_in_ray = False  # the lost executor left a call waiting inside Ray
        self.lost_reason: str | None = None  # why the executor's workers are gone, once they are
        self.executor_starting: Executor | None = None  # the one being started, until it runs or fails
        self._workers_shown: list[dict[str, Any]] | None = None
        self._host_stops: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._loop, name="recond-worker", daemon=True)

    @property
    def inbox(self) -> Path:
        return self.settings.inbox.resolve()

    @property
    def outbox(self) -> Path:
        return self.settings.outbox.resolve()

    @property
    def busy(self) -> bool:
        return bool(self.in_flight)

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
        for folder in leftovers.clean_staging(self.outbox, self.owner):
            log.info("removed a staging folder left by a crash", folder=str(folder))

    def start(self) -> None:
        """Start the worker thread; call from the main thread (load_main_thread_libraries)."""
        load_main_thread_libraries()
        self._thread.start()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Stop taking jobs; every job in flight is cancelled and requeued without counting an
        attempt (a device part at its next progress report, a host process at once). Waits at
        most ``timeout`` for the thread: past it the caller goes on (is_alive() says so), and
        a job still marked running is recovered at the next start, as after a crash."""
        self._stopping.set()
        executor = self.executor or self.executor_starting
        if executor is not None:
            executor.cancel()
        self._wake.set()
        self._thread.join(timeout)

    def close(self) -> None:
        """For a caller that ran jobs with process() and never start(): close the executor the
        first job loaded (its host processes ignore SIGTERM, so a pool left open would hold the
        caller's exit, where multiprocessing joins its children)."""
        assert not self._thread.is_alive(), "a started worker is ended with stop()"
        self._close_executor()

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
        self._shut_down()

    def _step(self) -> None:
        self._apply_new_settings()
        for job_id in sorted(self._stranded):
            self._put_back(job_id)
        if self.lost_reason is not None:
            self._wait_for_return(self.lost_reason)
            return
        if self.executor is None:
            if time.monotonic() >= self._next_load:
                self._load_model()
            if self.executor is None:
                self._wake.wait(max(0.0, self._next_load - time.monotonic()))
            return
        if self.executor.lost is not None:  # first: nothing below may wait on a cluster that is gone
            self._executor_lost(self.executor.lost)
            return
        self._advance_finished()
        self._show_workers()
        if self._rebuild:
            if not self.in_flight:
                self._close_executor()
            else:
                self._wake.wait(WAIT_SECONDS)
            return
        if self.paused and not self._outbox_cleared():
            self._wake.wait(WAIT_SECONDS)  # parts still ending wake it: they are recorded meanwhile
            return
        replaced = self.gate.identity.check()
        if replaced:  # nothing is built for, let alone published into, a bare mount point
            self._pause(OutboxFault(replaced, False, 0))
            return
        if self._has_room() and (job := self.store.claim_next()) is not None:
            try:
                self._begin(job)
            except Exception:
                self._put_back(job.id)
                raise
            after = self.store.get(job.id)
            if self.paused or (after is not None and after.state == QUEUED):
                self._wake.wait(WAIT_SECONDS)  # it waits for the outbox or the share: so do we
            return
        self._wake.wait(WAIT_SECONDS)  # a finished part and intake wake us; this is a safety net

    def _has_room(self) -> bool:
        executor = self.executor
        on_device = sum(1 for flight in self.in_flight.values() if flight.phase == "device")
        return (executor is not None and len(self.in_flight) < executor.capacity
                and on_device < executor.device_slots)

    def _shut_down(self) -> None:
        """The thread's last act: the executor stopped, every job in flight back in the queue."""
        self._close_executor()
        for flight in list(self.in_flight.values()):
            self._drop(flight, requeue=True)
            log.info("job requeued", job=flight.job.id, file=flight.job.source, reason="stopping")

    def _put_back(self, job_id: int) -> None:
        """A job an unexpected error interrupted (or the daemon stopping) returns to the queue,
        its attempt not counted. When the store cannot take even that (a full state disk), the
        job is remembered and put back before the next one is claimed, so it is never left
        "running" (issue 18); a result it published is then found and recorded (``_begin``)."""
        self._stranded.add(job_id)
        current = self.store.get(job_id)
        if current is not None and current.state == RUNNING:
            self.store.requeue(job_id)
        self._stranded.discard(job_id)

    def _apply_new_settings(self) -> None:
        settings, self._new_settings = self._new_settings, None
        if settings is None:
            return
        executor_changed = executor_shape(settings) != executor_shape(self.settings)
        adopt_any = settings.adopt_changed_folders
        if settings.inbox != self.settings.inbox or adopt_any != self.settings.adopt_changed_folders:
            self.inbox_identity = FolderIdentity("inbox", settings.inbox.resolve(), settings.state_dir, adopt_any)
        if settings.outbox != self.settings.outbox or adopt_any != self.settings.adopt_changed_folders:
            self.gate = OutboxGate(settings.outbox.resolve(), self.owner, settings.state_dir, adopt_any)
        self.settings = settings
        if self.executor is None:
            self._next_load = 0.0
        elif executor_changed:
            self._rebuild = True

    def _load_model(self) -> None:
        self.store.daemon_update(model_status="loading", model_detail=self.settings.model)
        started = time.monotonic()
        executor = build_executor(self.settings, self.pipeline_factory, self._record_progress,
                                  lambda line: self.store.daemon_update(model_detail=line))
        self.executor_starting = executor  # stop() cancels it: a connect or load ends within a second
        try:
            facts = executor.start()
        except Exception as error:  # any failure here means "no model"; jobs wait, nothing fails
            self.executor_starting = None
            executor.close()
            if self._stopping.is_set():
                return
            fix = loading_fix(error, self.how_to_reload)
            detail = f"{' '.join(str(error).split())} -- to fix: {fix}"
            self._next_load = time.monotonic() + self.settings.model_retry_seconds
            self.store.daemon_update(model_status="missing", model_detail=detail, device=None, dtype=None)
            log.error("model not loaded; jobs stay queued", model=self.settings.model,
                      error=str(error), fix=fix, retry_in_s=self.settings.model_retry_seconds)
            return
        self._wait_for_host_processes(executor)
        self.executor, self.executor_starting = executor, None
        self.store.daemon_update(
            model_status="ready", device=facts.device, dtype=facts.dtype,
            model_detail=f"{facts.model_id} (pictures without transparency: {facts.background_method})"
                         + (f" -- WARNING: {facts.warning}" if facts.warning else ""))
        log.info("model loaded", model=self.settings.model, device=facts.device, dtype=facts.dtype,
                 jobs_at_once=executor.capacity, seconds=round(time.monotonic() - started, 2))

    def _wait_for_host_processes(self, executor: Executor) -> None:
        """The host processes import torch while the model loads; what is left of that is waited
        for (at most HOST_IMPORT_WAIT_SECONDS, a stop ends it at once), or the first picture's
        device part would share the CPUs with it: with host_workers = 0 its grid stage took
        1.1-1.2 s instead of 0.5 (benchmarks/bench_same_speed.py, issue 26)."""
        deadline = time.monotonic() + HOST_IMPORT_WAIT_SECONDS
        while not executor.wait_for_host_process(0.25):
            if self._stopping.is_set() or time.monotonic() > deadline:
                return

    def _executor_lost(self, reason: str) -> None:
        """The executor's workers are gone (a Ray cluster that stopped answering): its parts
        ended as cancelled, so their jobs are back in the queue without an attempt counted.
        The worker then waits for the cluster (``_wait_for_return``) and ends the run once it
        answers, for the daemon to start afresh: asking Ray to join again inside this process
        aborted it in Ray's C++ code (issue 27). Status says so first, before anything here
        talks to what is left of the executor."""
        self.store.daemon_update(model_status="missing", workers=[], model_detail=(
            f"{reason}; the jobs wait queued, and recond starts afresh once the cluster answers "
            "again (docs/ray.md)"))
        self._workers_shown = []
        self._advance_finished()
        for flight in list(self.in_flight.values()):  # a part Ray never settled
            self._drop(flight, requeue=True)
        executor, self.executor = self.executor, None
        # Only the Ray executor can be lost; a call it left waiting inside Ray means starting
        # afresh before the cluster returns (RayExecutor.calls_left_in_ray).
        self._stuck_in_ray = bool(getattr(executor, "calls_left_in_ray", False))
        if executor is not None:
            executor.close()  # without a word to Ray: it is lost
        self.lost_reason = reason
        self._next_load = time.monotonic() + LOST_CHECK_SECONDS
        log.error("executor lost; the jobs in flight are back in the queue", reason=reason,
                  queued=self.store.counts()["queued"])

    def _wait_for_return(self, reason: str) -> None:
        """Ask the lost cluster every LOST_CHECK_SECONDS, from a child process; once it answers,
        end the run (``exit_reason``): the daemon starts afresh in a new process image."""
        from recond.executors.ray_probe import ProbeFailed, ask

        if time.monotonic() < self._next_load:
            self._wake.wait(max(0.0, self._next_load - time.monotonic()))
            return
        if self._stuck_in_ray:
            self.exit_reason = (f"a call into the lost Ray cluster at {self.settings.ray_address} never "
                                f"returned; starting afresh before the cluster is back, after: {reason}")
            self._stopping.set()
            return
        try:
            ask(self.settings.ray_address, self.settings.ray_connect_seconds, self._stopping)
        except ProbeFailed as error:
            self._next_load = time.monotonic() + LOST_CHECK_SECONDS
            log.debug("the lost cluster does not answer yet", error=str(error))
            return
        self.exit_reason = f"the Ray cluster at {self.settings.ray_address} answers again after: {reason}"
        self.store.daemon_update(model_status="loading", model_detail="the Ray cluster is back; recond starts afresh")
        self._stopping.set()

    def _close_executor(self) -> None:
        executor, self.executor = self.executor, None
        self._rebuild, self._next_load = False, 0.0
        if executor is not None:
            executor.close()
        self._show_workers()

    def _show_workers(self) -> None:
        """Where parts run, for `reconctl status`: written to the daemon row when it changes."""
        workers = [info.as_dict() for info in self.executor.workers()] if self.executor else []
        if workers != self._workers_shown:
            try:
                self.store.daemon_update(workers=workers)
                self._workers_shown = workers
            except sqlite3.Error as error:  # shown at the next change or step
                log.warning("workers not recorded", error=str(error))

    # One job: check its bytes, run its two parts, publish, then record the outcome.

    def process(self, job: Job) -> None:
        """Run one claimed job to done, failed or back to the queue, in this thread."""
        self._begin(job)
        while (flight := self.in_flight.get(job.id)) is not None:
            assert flight.future is not None, "a job in flight has a part running"
            wait([flight.future])
            self._advance(flight)

    def _begin(self, job: Job) -> None:
        """Start one claimed job: record it done when its result is already published, else
        hand its bytes to the device part; the loop takes it on from there."""
        published = self._published(job)
        if published is not None:  # renamed into place just before a crash: record, never redo
            self._finish(job, published, job.warnings, job.sha256, started=None)
            return
        if self.executor is None:
            self._load_model()
        started = time.monotonic()
        try:
            picture = self._verified_source(job)
        except JobEnded:
            return  # recorded where it was found out
        except JobWaits as interruption:
            self.store.requeue(job.id)
            log.info("job requeued", job=job.id, file=job.source, reason=type(interruption).__name__)
            return
        except Exception as error:
            self._job_error(job, error, started)
            return
        executor = self.executor
        if executor is None:  # the model did not load: the job waits for it
            self.store.requeue(job.id)
            return
        settings, facts = self._settings_of(job)
        log.info("job started", job=job.id, file=job.source, attempt=job.attempts, preset=facts["preset"])
        expected = expected_stage_seconds(self.settings.state_dir)
        flight = InFlight(job, picture, settings, facts, started,
                          EtaEstimate(self._progress_reporter(job), expected), expected)
        self.in_flight[job.id] = flight
        if not runs_in_daemon(self.settings, "device"):
            self._part_started(job, in_daemon=False)
        self._running(flight, lambda: executor.submit_device(DeviceTask(job.id, picture, flight.settings)))

    def _settings_of(self, job: Job) -> tuple[JobSettings, dict[str, Any]]:
        """The job's settings as the settings say now (a SIGHUP applies to jobs not yet started):
        a redo's preset and --set values, else its inbox folder's preset; and what job.json
        records of them (issue 25)."""
        preset = job.preset if job.redo_of else preset_of(job.source_name, self.settings.presets)
        settings, warning = job_settings(self.settings, preset, job.overrides)
        if warning:
            log.warning(warning, job=job.id, file=job.source)
            preset = None
        if preset != job.preset:
            self.store.record_preset(job.id, preset)
            job.preset = preset
        facts = {"job": job.id, "preset": preset, "overrides": job.overrides,
                 "redone_from": redone_from(job, self.outbox)}
        return settings, facts

    def _running(self, flight: InFlight, submit: Callable[[], Future[Any]]) -> None:
        """Submit a part of ``flight``; its end wakes the loop. An error submitting puts the job back."""
        try:
            flight.future = submit()
        except Exception:
            self._drop(flight, requeue=True)
            raise
        flight.future.add_done_callback(lambda future: self._wake.set())
        self._show_workers()  # busy from the part's start, not from the next turn of the loop

    def _advance_finished(self) -> None:
        """Act on every part that ended: start the host part, publish, fail or requeue."""
        for flight in list(self.in_flight.values()):
            if flight.future is not None and flight.future.done():
                try:
                    self._advance(flight)
                except Exception:  # e.g. the store failed us: the job must not stay "running"
                    self._drop(flight, requeue=True)
                    raise

    def _advance(self, flight: InFlight) -> None:
        job = flight.job
        assert flight.future is not None, "only a submitted part ends"
        try:
            value = flight.future.result()
        except (JobCancelled, CancelledError):
            self._drop(flight, requeue=True)
            log.info("job requeued", job=job.id, file=job.source, reason="JobCancelled")
        except WorkerLost as lost:
            self._drop(flight)
            self._worker_lost(job, lost)
        except Exception as error:
            self._drop(flight)
            self._job_error(job, error, flight.started)
        else:
            if flight.phase == "device":
                self._start_host_part(flight, value)
            else:
                self._publish(flight, value)

    def _start_host_part(self, flight: InFlight, handoff: DeviceOutput) -> None:
        executor, job = self.executor, flight.job
        assert executor is not None, "the executor stays while jobs are in flight"
        try:  # nothing is built in a folder that is not the outbox recond started with
            self.gate.identity.raise_if_replaced()
            flight.folder = flight.staging.enter_context(
                publish.staging(self.outbox, job.result_name, f"{self.owner}-{job.id}"))
        except Exception as error:  # e.g. the outbox is full or gone
            self._drop(flight)
            self._job_error(job, error, flight.started)
            return
        flight.phase = "host"
        in_daemon = runs_in_daemon(self.settings, "host")
        # Shown until the host part reports its first stage: no host process may be free yet.
        self._part_started(job, in_daemon, stage=None if in_daemon else WAITING_FOR_HOST)
        folder = flight.folder
        self._running(flight, lambda: executor.submit_host(
            HostTask(job.id, handoff, flight.settings, folder, flight.expected_s)))

    def _part_started(self, job: Job, in_daemon: bool, stage: str | None = None) -> None:
        """Where the job's part runs now, for status and crash recovery: best effort, like its
        progress (a busy or full database never costs the job its run)."""
        try:
            self.store.part_started(job.id, in_daemon, stage)
        except sqlite3.Error as error:
            log.warning("where the job's part runs was not recorded", job=job.id, error=str(error))

    def _publish(self, flight: InFlight, result: JobResult) -> None:
        job = flight.job
        assert flight.folder is not None, "a host part ran in a staging folder"
        try:
            write_record(flight.folder, {**result.record, **flight.facts})
            folder = publish.publish_result(flight.folder, self.outbox, job.result_name, flight.source.mode,
                                           self._may_publish)
        except LeaseLost as lost:  # another daemon has the inbox now (or it cannot be told)
            self._drop(flight, requeue=True)
            log.warning("job not published: the inbox lease is not known to be ours", job=job.id, file=job.source,
                        error=str(lost))
            return
        except Exception as error:
            self._drop(flight)
            self._job_error(job, error, flight.started)
            return
        flight.staging.close()  # published: nothing left to remove
        not_kept = remember_stage_seconds(self.settings.state_dir, result.stage_seconds)
        if not_kept:  # best effort: a full state disk never costs the result
            self._repeats.log(log.warning, not_kept)
        self._finish(job, folder, result.warnings, result.record.get("sha256", job.sha256), flight.started)
        del self.in_flight[job.id]

    def _may_publish(self) -> None:
        """Raise unless the outbox is the one recond started with and the inbox is still ours."""
        self.gate.identity.raise_if_replaced()
        if self.inbox_lease is not None:
            self.inbox_lease.raise_if_lost()

    def _drop(self, flight: InFlight, requeue: bool = False) -> None:
        """Forget a job in flight, removing its staging folder; ``requeue`` puts it back in the
        queue without counting the attempt (else the caller records what happened)."""
        self.in_flight.pop(flight.job.id, None)
        # Leaving publish.staging() by an exception is what removes its folder.
        flight.staging.__exit__(JobCancelled, JobCancelled(), None)
        if requeue:
            self._put_back(flight.job.id)

    def _worker_lost(self, job: Job, lost: WorkerLost) -> None:
        """The process running the job died: one attempt spent; out of attempts, the job fails."""
        if job.attempts >= self.settings.max_attempts:
            reason = (f"{lost}; that happened on each of its {job.attempts} attempts "
                      f"(max_attempts = {self.settings.max_attempts}): it may crash the pipeline")
            log.error("job failed", job=job.id, file=job.source, error=reason)
            self.fail_job(job, reason)
            return
        self.store.requeue(job.id, count_attempt=True)
        log.warning("job requeued: the process running it died", job=job.id, file=job.source,
                    error=str(lost), attempts=job.attempts)

    def _verified_source(self, job: Job) -> SourcePicture:
        """The job's picture: its bytes read once, from one descriptor opened beneath the inbox
        (recond.inbox.dropped), and checked to be exactly the job's bytes; the pipeline gets these
        bytes and never opens the file. Raises JobEnded when the job ended here (removed,
        unreadable, too large, changed) and JobWaits when the inbox is away."""
        if job.redo_of:
            return self._redo_source(job)
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

    def _redo_source(self, job: Job) -> SourcePicture:
        """A redo's picture: its old result's source.*, checked against the bytes queued."""
        assert job.redo_of is not None, "only a redo reads its picture from the outbox"
        copy = read_record(self.outbox / job.redo_of).get("source_copy")
        try:
            read = dropped.read(self.outbox, f"{job.redo_of}/{copy}", self.settings.max_file_bytes,
                                keep=True)
        except (OSError, TypeError) as error:
            self.store.fail(job.id, f"the result folder {job.redo_of} no longer holds its picture "
                            f"({getattr(error, 'strerror', None) or error}); nothing to redo")
            raise JobEnded() from None
        if read.sha256 != job.sha256:
            self.store.fail(job.id, f"the picture in {job.redo_of} changed after the redo was "
                            "queued; queue the redo again")
            raise JobEnded()
        return SourcePicture(PurePosixPath(job.source_name).name, read.data, read.mode)

    def _fail_removed(self, job: Job) -> None:
        """The file is gone from its inbox path: removed, or moved to failed/ by a run that was
        killed before it could record that (then the record learns where it lies)."""
        kept = find_in_failed(self.inbox, job.source_name, job.id, job.sha256, job.size)
        if kept is not None:
            self.store.fail(job.id, "recond stopped after moving the file to failed/ and before "
                            f"recording it; the reason is in {error_note(kept).name}", kept_at=kept)
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
        if isinstance(error, HostStopped):
            self._record_host_stop(job, error)
        if isinstance(error, StageTimedOut) and job.attempts < self.settings.max_attempts:
            self.store.retry_later(job.id, str(error))
            log.warning("job requeued: a stage ran past its time limit", job=job.id, file=job.source,
                        error=str(error), attempt=job.attempts, max_attempts=self.settings.max_attempts)
            return
        reason, user_caused = describe_failure(error)
        log.error("job failed", job=job.id, file=job.source, error=reason,
                  seconds=round(time.monotonic() - started, 2), exc_info=not user_caused)
        self.fail_job(job, reason)

    def _record_host_stop(self, job: Job, stopped: HostStopped) -> None:
        """For `reconctl status`: which job's host process was stopped, in which stage, after how
        long, and which fresh process took its place (the latest HOST_STOPS_SHOWN)."""
        self._host_stops = [*self._host_stops, {
            "job_id": job.id, "source": job.source, "stage": stopped.stage, "seconds": round(stopped.spent_s, 1),
            "limit_s": round(stopped.limit_s, 1), "pid": stopped.pid, "fresh_pid": stopped.fresh_pid,
            "at": time.time()}][-HOST_STOPS_SHOWN:]
        try:
            self.store.daemon_update(host_stops=self._host_stops)
        except sqlite3.Error as error:  # the log has it (recond.executors.host_pool); status misses one
            log.warning("host process stop not recorded", job=job.id, error=str(error))

    def _finish(self, job: Job, folder: Path, warnings: list[str], published_sha256: str,
                started: float | None) -> None:
        """Record the job done, then remove its original and the copies that waited on it, each
        only while it holds the published bytes."""
        notes = list(warnings)
        if published_sha256 != job.sha256:
            notes.append("the file changed just before processing; the result holds its newer contents")
        if not job.redo_of:  # a redo's picture is its old result's, which stays
            notes += self._remove_original(job, published_sha256)
        self.store.finish(job.id, folder, notes,
                          sha256=published_sha256 if published_sha256 != job.sha256 else None,
                          owed=events.published(self.settings, job, folder, published_sha256))
        self.on_owed()
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
        remove_emptied_folders(self.inbox, source)
        return []

    def _release_duplicates(self, job: Job, folder: Path) -> None:
        """Copies recorded while the job was active: removed now that a result holds their bytes."""
        for copy in self.store.duplicates_of(job.id):
            try:
                if publish.result_holds(folder, copy.sha256) and dropped.remove_if_holds(
                        self.inbox, copy.source_name, copy.sha256, copy.size):
                    remove_emptied_folders(self.inbox, copy.source_name)
                    log.info("duplicate removed from the inbox", job=copy.id, file=copy.source,
                             output=str(folder))
            except OSError as error:
                log.warning("duplicate not removed from the inbox", job=copy.id, file=copy.source,
                            error=str(error))

    def _published(self, job: Job) -> Path | None:
        """This job's result, when a run published it before its record (a kill in between).
        A folder whose job.json names another job is not it: two redos of one picture in the
        same second have the same bytes and names that differ only by their -N."""
        if not job.result_name:
            return None
        found = publish.find_published(self.outbox, job.result_name, job.sha256)
        if found is not None and read_record(found).get("job", job.id) != job.id:
            return None
        return found

    def fail_job(self, job: Job, reason: str) -> None:
        """Record the failure and move the original to inbox/failed/ with a note beside it (a
        redo's picture stays in its old result); then owe the failure's hook and webhook."""
        if job.redo_of:
            kept: Path | None = self.outbox / job.redo_of / str(read_record(self.outbox / job.redo_of)
                                                                .get("source_copy", ""))
            self.store.fail(job.id, reason, kept_at=kept)
        else:
            set_aside(self.store, self.inbox, job, reason)
            failed = self.store.get(job.id)
            kept = Path(failed.output) if failed and failed.output else None
        owed = events.failed(self.settings, job, reason, str(kept) if kept else None)
        if owed:
            self.store.owe(job.id, owed)
            self.on_owed()

    # The outbox as a resource: full or unwritable pauses the queue.

    def _pause(self, fault: OutboxFault) -> None:
        if self.paused is None:
            log.warning("queue paused: jobs stay queued until the outbox can take results",
                        reason=fault.reason)
        self.gate.fault, self.paused = fault, fault.reason
        self.store.daemon_update(worker_warning=f"queue paused: {fault.reason}")

    def _outbox_cleared(self) -> bool:
        if not self.gate.cleared():
            fault = self.gate.fault
            if fault is not None and fault.reason != self.paused:  # status names what holds it now
                self._pause(fault)
            return False
        log.info("queue resumed: the outbox takes results again", outbox=str(self.outbox))
        self.paused = None
        self.store.daemon_update(worker_warning=None)
        return True

    def _record_progress(self, message: PartProgress) -> None:
        """A part's (stage, fraction), from any thread: to the job's ETA, the store and the log."""
        flight = self.in_flight.get(message.job_id)
        if flight is None:
            return
        new_stage = message.stage != flight.eta.stage
        flight.eta(message.stage, message.fraction)
        if new_stage:  # which worker is busy changes with the parts: status shows it now
            if threading.current_thread() is self._thread:
                self._show_workers()  # a part running in this thread (host_workers = 0)
            else:
                self._wake.set()  # the loop refreshes it (never from an executor's own thread)

    def _progress_reporter(self, job: Job) -> ProgressCallback:
        last: dict[str, Any] = {"stage": None, "written": 0.0, "decile": -1}

        def report(progress: Progress) -> None:
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
