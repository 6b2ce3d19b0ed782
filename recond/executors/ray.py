"""executor = "ray": the parts of jobs run on a Ray cluster, so more machines (and GPUs) share
one queue (issue 14; docs/scaling.md, "More than one machine").

Each device worker is a Ray actor holding one warm pipeline (one GPU each on a cluster with
GPUs, else a CPU actor); host parts run as Ray tasks on any node with a free CPU. The picture
goes out as bytes and the result comes back as its files' bytes, which this process writes into
the worker's staging folder: nodes share no filesystem with the daemon, and nothing on them
touches the inbox, the job database or the outbox (STYLE.md habit 13).

What Ray does when something dies (measured with Ray 2.60 on a 2-core CPU VM, docs/scaling.md):
an actor killed mid-task fails that task with ActorUnavailableError, a RayActorError whose text says
"the task may or may not have been executed", and Ray restarts the actor, which runs __init__
again and so reloads its model (``max_restarts=-1``). The task itself is never run again
(``max_task_retries=0``), nor is a killed host task (``max_retries=0``; WorkerCrashedError).
Every such loss becomes WorkerLost: the worker requeues the job with one attempt counted, and
whether a result exists is the worker's bookkeeping (the store and outbox.publish.find_published), never
the actor's word.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    RayActorError,
    RayError,
    RayTaskError,
    TaskCancelledError,
)

from recond.config import JobSettings, ModelSettings, Settings, part_of
from recond.executors import (
    DeviceFacts,
    DeviceTask,
    HostTask,
    JobCancelled,
    PartProgress,
    PipelineFactory,
    ProgressSink,
    WorkerInfo,
    WorkerLost,
    ray_probe,
)
from recond.errors import HostStopped
from recond.executors.host_pool import FIRST_HOST_STAGE, overdue_stage
from recond.executors.ray_probe import ClusterFacts, open_to_others
from recond.logging import get_logger
from recond.pipeline.contract import JobResult, SourcePicture
from recond.pipeline.handoff import DeviceOutput
from recond.pipeline.progress import HOST_STAGES, StageReport

log = get_logger("recond.executors.ray")

NAMESPACE = "recond"
LOCAL_ADDRESS = "local"  # ray_address: a private Ray inside the daemon
PROGRESS_POLL_SECONDS = 0.5  # how often the daemon collects the parts' progress from the board
REPORT_SECONDS = 0.25  # a part sends at most this often within one stage
CLUSTER_CHECK_SECONDS = 10.0  # how often the CPUs of the cluster (nodes come and go) are counted
RESULT_FILE_PREFIX = "recond-host-"
RESTART_ASK_SECONDS = 1.0  # between questions to an actor Ray is still restarting
# Placing an actor and loading its model (a first start may download the weights on its node):
# past this the start fails and the worker tries again after model_retry_seconds.
ACTOR_START_SECONDS = 900.0
CLOSE_SECONDS = 10.0  # each step of close(): the writer's last files, leaving the cluster
# No answer from the cluster for this long (the progress board, asked every PROGRESS_POLL_SECONDS)
# means it is gone: status says so and the worker ends the run (issue 27: after kill -9 of the
# raylet the queue sat for 80 s under "model: ready").
CLUSTER_LOST_SECONDS = 5.0
BOARD_ASK_SECONDS = 2.0  # one question to the board
# Right after a host task is stopped, a host task whose worker dies before its first report is
# the stop's aftermath, not its picture's doing: requeued without an attempt counted.
AFTER_STOP_SECONDS = 10.0


class RayUnavailable(RuntimeError):
    """No Ray cluster answers at ray_address; jobs stay queued and the worker tries again."""


class QuietRayWarnings(logging.Filter):
    """Drops Ray's warning that it set no SIGTERM handler: the daemon joins from its worker
    thread on purpose, so that SIGTERM stays the daemon's (on the main thread Ray's handler would
    exit the process at once, without requeueing the jobs in flight)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


# A ray.init that never returned leaves this process unable to join again: only a restart helps.
_wedged: list[str] = []


def connect(address: str, timeout_s: float, stop: threading.Event) -> ClusterFacts | None:
    """Join the cluster at ``address`` (or start a private one for ``local``) from the daemon.

    A cluster is first asked from a child process that can be killed (ray_probe.py says why);
    the join itself then runs on a thread given ``timeout_s`` as well. Returns what the child
    learnt of the cluster (None for a private Ray), or raises RayUnavailable with the reason.
    """
    if ray.is_initialized():
        return None
    if _wedged:
        raise RayUnavailable(_wedged[0])
    facts = None
    if address != LOCAL_ADDRESS:
        try:
            facts = ray_probe.ask(address, timeout_s, stop)
        except ray_probe.ProbeFailed as error:
            raise RayUnavailable(_unavailable(address, str(error))) from None
    options: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False,
                               "logging_level": logging.WARNING}
    if address == LOCAL_ADDRESS:
        options |= {"include_dashboard": False}
    logging.getLogger("ray._private.worker").addFilter(QuietRayWarnings())
    outcome: list[BaseException] = []

    def join() -> None:
        try:
            ray.init(address=address, **options)
        except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
            outcome.append(error)

    joining = threading.Thread(target=join, name="recond-ray-connect", daemon=True)
    joining.start()
    joining.join(timeout_s)
    if joining.is_alive():  # abandoned: Ray's own code holds the thread
        _wedged.append(_unavailable(address, f"ray.init did not return within {timeout_s:g} s, after "
                                    "the cluster answered a probe; restart recond to try again"))
        raise RayUnavailable(_wedged[0])
    if outcome:
        raise RayUnavailable(_unavailable(address, str(outcome[0]))) from None
    return facts


def _unavailable(address: str, reason: str) -> str:
    return (f"no Ray cluster answers at ray_address = {address!r} ({' '.join(reason.split())}); "
            "start one (docs/ray.md) or fix ray_address")


# What runs on the cluster.


class ProgressBoard:
    """Collects the parts' (stage, fraction) reports until the daemon takes them (an actor: a
    remote part cannot call into the daemon)."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, str, float, str, int]] = []

    def report(self, job_id: int, stage: str, fraction: float, node: str, pid: int = 0) -> None:
        self.reports.append((job_id, stage, fraction, node, pid))

    def take(self) -> list[tuple[int, str, float, str, int]]:
        reports, self.reports = self.reports, []
        return reports


# Created with ray.remote(...)(cls) rather than as a decorator, which a type checker would not see.
RemoteProgressBoard = ray.remote(num_cpus=0, max_restarts=-1)(ProgressBoard)


def node_name() -> str:
    """The node a part runs on, as status shows it: its address and host name."""
    return f"{ray.util.get_node_ip_address()} ({socket.gethostname()})"


def board_reporter(board_name: str, job_id: int) -> StageReport:
    """A part's report function: each new stage, its end, and otherwise every REPORT_SECONDS.

    The board is passed by name, not as a handle: Ray warns that an actor whose constructor
    arguments live in the object store may fail to restart once they are gone.
    """
    last: dict[str, Any] = {"stage": None, "at": 0.0}
    node = node_name()
    board = ray.get_actor(board_name, namespace=NAMESPACE)

    def report(stage: str, fraction: float) -> None:
        now = time.monotonic()
        if stage != last["stage"] or fraction >= 1.0 or now - last["at"] >= REPORT_SECONDS:
            board.report.remote(job_id, stage, fraction, node, os.getpid())
            last["stage"], last["at"] = stage, now

    return report


class DeviceWorker:
    """One warm pipeline on one node (and GPU). A restart after a crash builds it again here."""

    def __init__(self, settings: ModelSettings, board_name: str) -> None:
        from recond.pipeline.warm import build_pipeline

        self.board_name = board_name
        self.load_error: Exception | None = None
        try:
            # devices is the local executor's; Ray gives each actor its GPU as `device` sees it.
            self.pipeline = build_pipeline(settings.on_device(settings.device))
        except Exception as error:  # kept, so facts() raises it as itself (loading_fix reads it)
            self.load_error = error

    def facts(self) -> dict[str, Any]:
        if self.load_error is not None:
            raise self.load_error
        return {"node": node_name(), "pid": os.getpid(), "device": self.pipeline.device,
                "dtype": str(self.pipeline.dtype),
                "model_id": self.pipeline.model_id, "background_method": self.pipeline.background_method}

    def device_part(self, job_id: int, source: SourcePicture, job: JobSettings) -> DeviceOutput:
        return self.pipeline.device_part(source, job, board_reporter(self.board_name, job_id))


RemoteDeviceWorker = ray.remote(max_restarts=-1, max_task_retries=0)(DeviceWorker)


@ray.remote(num_cpus=1, max_retries=0)
def host_part_on_node(job_id: int, handoff: DeviceOutput, job: JobSettings, board_name: str,
                      expected_s: dict[str, float] | None = None) -> tuple[JobResult, dict[str, bytes]]:
    """The host part in a temporary folder on whichever node runs it; returns its result and
    the folder's files as {relative path: bytes}."""
    from recond.pipeline.host import run_host_part
    from recond.pipeline.tuning import tune_torch

    tune_torch()  # Ray gives the task one CPU's threads (OMP_NUM_THREADS); the flag as everywhere
    with tempfile.TemporaryDirectory(prefix=RESULT_FILE_PREFIX) as name:
        folder = Path(name)
        result = run_host_part(handoff, job, folder, board_reporter(board_name, job_id), expected_s)
        files = {path.relative_to(folder).as_posix(): path.read_bytes()
                 for path in sorted(folder.rglob("*")) if path.is_file()}
    return result, files


@ray.remote(num_cpus=1, max_retries=0)
def warm_host_process() -> None:
    """Import the host part into a Ray worker process (Ray reuses its processes for later tasks),
    so the first jobs do not each wait seconds for torch and trimesh to load."""
    import recond.pipeline.host  # noqa: F401


# The daemon's side.


@dataclass
class DeviceSlot:
    """One device actor as the daemon sees it."""

    index: int
    actor: Any
    ready: bool = False  # its model is loaded (False while Ray restarts it)
    job_id: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def info(self) -> WorkerInfo:
        state = "" if self.ready else " (restarting)"
        return WorkerInfo(f"ray-device-{self.index}", "device", self.facts.get("node", "?"),
                          self.facts.get("device", "?") + state, self.job_id is not None, self.job_id,
                          self.facts.get("pid"))


@dataclass
class RemotePart:
    """A part submitted to Ray, the future the worker holds, and where it runs."""

    job_id: int
    kind: str  # "device" or "host"
    ref: Any  # ray.ObjectRef
    future: Future[Any]
    node: str = "?"
    task: HostTask | None = None  # a host part's, for its stages' limits
    stage: str = FIRST_HOST_STAGE  # the stage it last reported
    stage_started: float = field(default_factory=time.monotonic)  # submitted, then each new stage
    reported: bool = False  # it has started: a report came
    pid: int = 0  # the Ray worker process that runs it, once it reported
    stopped: bool = False  # past its stage's limit: killed and failed

    def overdue(self, now: float) -> tuple[str, float, float, float] | None:
        """(stage, seconds spent, limit, expected) for a host part whose stage ran past its limit
        (as recond.executors.host_pool holds its processes), else None."""
        if self.task is None or self.stopped:
            return None
        return overdue_stage(self.task, self.stage, self.stage_started, self.reported, now)


class RayExecutor:
    """Device actors and host tasks on the cluster at ``settings.ray_address``."""

    def __init__(self, settings: Settings, pipeline_factory: PipelineFactory,
                 on_progress: ProgressSink, on_status: Callable[[str], None] = lambda line: None) -> None:
        # pipeline_factory is the daemon's; each actor builds its pipeline on its own node.
        # on_status gets lines for status while start() connects ("connecting to Ray at ...").
        self.settings = settings
        self.on_status = on_status
        self.open_warning: str | None = None  # the cluster is open to others (joined anyway)
        self.lost: str | None = None  # why the cluster is gone, once it is
        self._counting: threading.Thread | None = None  # the latest count of the cluster's CPUs
        self._connect_stop = threading.Event()  # set by cancel(): a connect in progress ends now
        self.model_settings = part_of(settings, ModelSettings)
        self.on_progress = on_progress
        self._lock = threading.Lock()
        self._slots: list[DeviceSlot] = []
        self._parts: dict[int, RemotePart] = {}
        self._cancelled = False
        self._closed = threading.Event()
        self._board: Any = None
        self._board_name = f"recond-progress-{uuid.uuid4().hex[:12]}"  # one per daemon and start
        self._host_slots = 1
        self._cpu_actors = 0
        self._actor_options: dict[str, Any] = {}  # {"num_gpus": 1} on a cluster with GPUs
        self._cluster_checked = 0.0
        self._last_stop = float("-inf")  # when a host task was last stopped at its limit (monotonic)
        # Result files are written off Ray's callback thread, which must not wait on a disk.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="recond-ray-results")
        self._poller = threading.Thread(target=self._poll_progress, name="recond-ray-progress", daemon=True)
        self._answered_at = 0.0  # when the board last answered (monotonic); 0 before the poller starts
        self._watch = threading.Thread(target=self._watch_silence, name="recond-ray-silence", daemon=True)

    # The interface (recond/executors/__init__.py).

    @property
    def device_slots(self) -> int:
        with self._lock:
            return sum(1 for slot in self._slots if slot.ready)

    @property
    def capacity(self) -> int:
        """Jobs in flight: one per ready actor, plus one host part per CPU the actors leave."""
        self._count_cluster()
        return self.device_slots + self._host_slots

    def start(self) -> DeviceFacts:
        address = self.settings.ray_address
        self.on_status(f"connecting to Ray at {address} (at most ray_connect_seconds = "
                       f"{self.settings.ray_connect_seconds:g} s)")
        cluster = connect(address, self.settings.ray_connect_seconds, self._connect_stop)
        self.open_warning = open_to_others(cluster)
        if self.open_warning and not self.settings.ray_allow_open_cluster:
            raise RayUnavailable(f"not joined: {self.open_warning} (ray_allow_open_cluster = true "
                                 "joins anyway)")
        if self.open_warning:
            log.warning("joined an open Ray cluster", warning=self.open_warning)
        self.on_status(f"joined Ray at {address}; the device actors load the model")
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = self.settings.ray_device_workers or gpus or 1
        self._actor_options = {"num_gpus": 1} if gpus else {}
        self._cpu_actors = 0 if gpus else count
        self._board = RemoteProgressBoard.options(name=self._board_name).remote()
        self._count_cluster(force=True)
        for _ in range(self._host_slots):  # while the actors load their models
            warm_host_process.remote()
        self._slots = [DeviceSlot(index, self._new_actor()) for index in range(count)]
        for slot in self._slots:  # waits for every model to load; a load error raises as itself
            slot.facts, slot.ready = self._facts_of(slot.actor), True
        self._answered_at = time.monotonic()
        self._poller.start()
        self._watch.start()
        first = self._slots[0].facts
        devices = sorted({slot.facts["device"] for slot in self._slots})
        log.info("ray actors ready", actors=count, nodes=sorted({slot.facts["node"] for slot in self._slots}),
                 devices=devices, host_parts_at_once=self._host_slots)
        return DeviceFacts(first["model_id"], f"ray: {count} × {'/'.join(devices)}", first["background_method"],
                           first.get("dtype", ""), self.open_warning or "")

    def submit_device(self, task: DeviceTask) -> Future[DeviceOutput]:
        with self._lock:
            if self._cancelled:
                return _failed(JobCancelled())
            slot = self._free_slot()
            slot.job_id = task.job_id
            ref = slot.actor.device_part.remote(task.job_id, task.source, task.job)
            part = self._parts[task.job_id] = RemotePart(task.job_id, "device", ref, Future(),
                                                          slot.facts.get("node", "?"))
        ref.future().add_done_callback(lambda done: self._device_done(slot, part, done))
        return part.future

    def submit_host(self, task: HostTask) -> Future[JobResult]:
        with self._lock:
            if self._cancelled:
                return _failed(JobCancelled())
            ref = host_part_on_node.remote(task.job_id, task.handoff, task.job, self._board_name,
                                           task.expected_s)
            part = self._parts[task.job_id] = RemotePart(task.job_id, "host", ref, Future(), task=task)
        ref.future().add_done_callback(lambda done: self._writer.submit(self._host_done, task, part, done))
        return part.future

    def cancel(self) -> None:
        """Every part in flight ends now with JobCancelled; Ray is asked to drop the host tasks."""
        self._connect_stop.set()
        with self._lock:
            self._cancelled = True
            parts = list(self._parts.values())
        for part in parts:  # all settled first: a lost cluster can keep ray.cancel waiting
            _settle(part.future, error=JobCancelled())
        for part in parts:
            if part.kind == "host":
                try:
                    ray.cancel(part.ref, force=True)
                except Exception as error:  # it may have ended meanwhile
                    log.debug("host task not cancelled", job=part.job_id, error=str(error))

    def close(self) -> None:
        """Stop the actors (their models go with them) and leave the cluster, each step within
        CLOSE_SECONDS: a cluster that is gone may keep Ray's calls waiting. After a loss nothing
        more is asked of Ray (its C++ code aborted the process when the cluster came back)."""
        self.cancel()
        self._closed.set()
        if self._poller.is_alive():
            self._poller.join(PROGRESS_POLL_SECONDS * 4)
        _bounded(lambda: self._writer.shutdown(wait=True), "the result writer")
        if self.lost is None and ray.is_initialized():
            _bounded(self._leave, "leaving the Ray cluster")
        self._slots = []

    def _leave(self) -> None:
        for actor in [slot.actor for slot in self._slots] + ([self._board] if self._board else []):
            try:
                ray.kill(actor, no_restart=True)
            except Exception as error:  # the cluster is gone: so are the actors
                log.debug("ray actor not killed", error=str(error))
        ray.shutdown()

    def wait_for_host_process(self, timeout: float) -> bool:
        return True  # host parts run in Ray's worker processes, started by Ray as it needs them

    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            devices = [slot.info() for slot in self._slots]
            hosts = [WorkerInfo(f"ray-host-job-{part.job_id}", "host", part.node, "cpu", True, part.job_id,
                                part.pid or None)  # the Ray worker's, once it reported
                     for part in self._parts.values() if part.kind == "host"]
        return devices + hosts

    def _facts_of(self, actor: Any) -> dict[str, Any]:
        """An actor's facts once its model is loaded; its load error raised as itself. Waits in
        slices, so that a stop (cancel) ends the wait within a second."""
        ref = actor.facts.remote()
        deadline = time.monotonic() + ACTOR_START_SECONDS
        while not ray.wait([ref], timeout=1.0)[0]:
            if self._connect_stop.is_set():
                raise RayUnavailable("stopped while the Ray device actors loaded their model")
            if time.monotonic() >= deadline:
                raise RayUnavailable(
                    f"the Ray device actors did not load their model within {ACTOR_START_SECONDS:.0f} s "
                    "(no node with a free GPU or CPU? `ray status` shows the cluster)")
        try:
            return dict(ray.get(ref, timeout=10))
        except RayTaskError as error:
            raise _cause(error) from None

    def _new_actor(self) -> Any:
        """A device actor: one GPU on a cluster with GPUs; else a CPU actor, which Ray places on
        a node with a free CPU but which holds none while it waits (Ray's default for actors)."""
        return RemoteDeviceWorker.options(**self._actor_options).remote(self.model_settings, self._board_name)

    # Under the lock.

    def _free_slot(self) -> DeviceSlot:
        """An idle actor, ready ones first (the worker asks only while one is ready; should one
        have died since, Ray holds the part until its restart)."""
        idle = [slot for slot in self._slots if slot.job_id is None]
        if not idle:
            raise RuntimeError("no idle Ray device actor; the worker exceeded device_slots")
        return sorted(idle, key=lambda slot: not slot.ready)[0]

    # Outcomes (Ray's callback thread, or the result writer's).

    def _device_done(self, slot: DeviceSlot, part: RemotePart, done: Future[Any]) -> None:
        error = done.exception()
        lost = _lost(error) if error is not None else None
        with self._lock:  # idle and, if it died, not ready, in one step: no job goes to a dead actor
            slot.job_id = None
            slot.ready = slot.ready and lost is None
            self._parts.pop(part.job_id, None)
        if error is None:
            _settle(part.future, value=done.result())
            return
        if lost is None:
            _settle(part.future, error=_cause(error))
            return
        self._restarting(slot, error)
        # An actor also dies with its raylet: told only a moment later whether the whole cluster
        # went, the job is then requeued as cancelled rather than charged an attempt.
        judge = threading.Timer(CLUSTER_LOST_SECONDS + BOARD_ASK_SECONDS + 2 * PROGRESS_POLL_SECONDS, lambda: _settle(
            part.future, error=JobCancelled() if self.lost or self._cancelled else lost))
        judge.daemon = True
        judge.start()

    def _host_done(self, task: HostTask, part: RemotePart, done: Future[Any]) -> None:
        with self._lock:
            self._parts.pop(part.job_id, None)
        if part.future.done():  # cancelled meanwhile: nothing is written
            return
        try:
            result, files = done.result()
            for name, data in files.items():  # into the daemon's staging folder
                target = task.result_dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        except BaseException as error:  # noqa: BLE001 - every outcome is handed to the worker
            lost = _lost(error)
            if lost is not None and self._died_of_a_stop(part):
                log.warning("ray host task lost to the worker just stopped; requeued uncharged",
                            job=part.job_id, error=" ".join(str(error).split())[:200])
                _settle(part.future, error=JobCancelled())
                return
            _settle(part.future, error=lost or _cause(error))
        else:
            _settle(part.future, value=replace(result, result_dir=task.result_dir))

    def _died_of_a_stop(self, part: RemotePart) -> bool:
        """A host task whose worker died before it reported a stage, within AFTER_STOP_SECONDS
        of a stop. The worker retries a stopped job at once, and Ray may hand the retry the very
        worker just killed (its lease still held) before it has seen that worker die: the retry
        then fails with WorkerCrashedError, never having started (seen in full runs). Anything
        later, or once a stage has begun, is charged as a crash as before."""
        return not part.reported and time.monotonic() - self._last_stop < AFTER_STOP_SECONDS

    def _restarting(self, slot: DeviceSlot, error: BaseException) -> None:
        """A dead actor: Ray restarts it (its __init__ reloads the model); it takes jobs again
        once it answers. One Ray gave up on (ActorDiedError) is replaced by a new one."""
        with self._lock:
            if isinstance(error, ActorDiedError) and not self._closed.is_set():
                slot.actor = self._new_actor()
        log.warning("ray device actor lost; Ray restarts it and it reloads its model",
                    actor=slot.index, node=slot.facts.get("node"), error=" ".join(str(error).split())[:300])
        self._ask_ready(slot)

    def _ask_ready(self, slot: DeviceSlot) -> None:
        if not self._closed.is_set():
            slot.actor.facts.remote().future().add_done_callback(lambda done: self._answered(slot, done))

    def _answered(self, slot: DeviceSlot, done: Future[Any]) -> None:
        try:
            facts = done.result()
        except ActorUnavailableError:  # still restarting: ask again
            threading.Timer(RESTART_ASK_SECONDS, self._ask_ready, [slot]).start()
            return
        except BaseException as error:  # noqa: BLE001 - its model did not load: it stays out
            if not self._closed.is_set():
                log.error("ray device actor did not come back", actor=slot.index,
                          error=" ".join(str(_cause(error)).split())[:300])
            return
        with self._lock:
            slot.facts, slot.ready = facts, True
        log.info("ray device actor ready again", actor=slot.index, node=facts["node"], pid=facts["pid"])

    # Progress and cluster size.

    def _poll_progress(self) -> None:
        while not self._closed.wait(PROGRESS_POLL_SECONDS) and self.lost is None:
            try:
                reports = ray.get(self._board.take.remote(), timeout=BOARD_ASK_SECONDS)
            except Exception as error:  # the board restarts or the cluster is busy: skip a beat
                silent = time.monotonic() - self._answered_at
                log.debug("progress not collected", error=str(error), silent_s=round(silent, 1))
                if silent >= CLUSTER_LOST_SECONDS and not self._closed.is_set():
                    self._cluster_lost(self._silence(silent, " ".join(str(error).split())[:200]))
                    return
                continue
            self._answered_at = time.monotonic()
            self._take(reports)
            self._stop_overdue()

    def _watch_silence(self) -> None:
        """The same judgement as the poller's, made from the clock alone: a call into Ray's core
        (submitting the question, not only waiting for the answer) can itself hang once the
        raylet is gone, and the poller would never reach its own check (seen once in seven full
        runs: the loss was noticed only when Ray ended the process, 26 s after the kill)."""
        limit = CLUSTER_LOST_SECONDS + BOARD_ASK_SECONDS  # the poller, if it can, says it first
        while not self._closed.wait(PROGRESS_POLL_SECONDS) and self.lost is None:
            silent = time.monotonic() - self._answered_at
            if silent >= limit:
                self._cluster_lost(self._silence(silent, "its last question still waits"))
                return

    def _silence(self, silent: float, detail: str) -> str:
        return f"the Ray cluster at {self.settings.ray_address} has not answered for {silent:.0f} s ({detail})"

    def _cluster_lost(self, reason: str) -> None:
        """The cluster is gone: every part in flight ends as cancelled (requeued, no attempt
        counted: the picture did nothing wrong) and the worker sees ``lost``. Said once, by
        whichever of the poller and the silence watch sees it first."""
        with self._lock:
            if self.lost is not None:
                return
            self.lost = reason
        log.error("ray cluster lost", reason=reason)
        self.cancel()

    def _take(self, reports: list[tuple[int, str, float, str, int]]) -> None:
        latest_node: dict[int, str] = defaultdict(str)
        for job_id, stage, fraction, node, pid in reports:
            latest_node[job_id] = node
            with self._lock:
                part = self._parts.get(job_id)
                # A host stage only: the device actor's last reports of the same job can still be
                # on the board when its host part has begun, and their pid is the actor's (seen
                # under load: the stop would have killed the warm model's process).
                if (part is not None and part.kind == "host" and stage in HOST_STAGES
                        and (stage != part.stage or not part.reported)):
                    part.stage, part.stage_started, part.reported, part.pid = stage, time.monotonic(), True, pid
            if part is not None:
                self.on_progress(PartProgress(job_id, stage, fraction))
        with self._lock:
            for job_id, node in latest_node.items():
                if job_id in self._parts:
                    self._parts[job_id].node = node

    def _stop_overdue(self) -> None:
        """A host task whose stage ran past its limit (a C call that never returns, a process
        frozen by SIGSTOP) is stopped as the host pool stops its processes: Ray is asked to kill
        its worker, and on this host the worker is killed outright (a frozen process answers no
        request); its part fails with HostStopped, which the worker retries (issue 22). Ray starts
        a fresh worker process for the next task."""
        now = time.monotonic()
        with self._lock:
            if self._cancelled:
                return
            overdue = [(part, facts) for part in self._parts.values() if (facts := part.overdue(now))]
            for part, _ in overdue:
                part.stopped = True
        for part, (stage, spent, limit, expected) in overdue:
            try:
                ray.cancel(part.ref, force=True)
            except Exception as error:  # it may have ended meanwhile
                log.debug("host task not cancelled", job=part.job_id, error=str(error))
            if part.pid and part.node.endswith(f"({socket.gethostname()})") and _is_ray_worker(part.pid):
                try:
                    os.kill(part.pid, signal.SIGKILL)
                except OSError:  # gone already
                    pass
            log.error("ray host task stopped: a stage ran past its limit; Ray starts a fresh worker",
                      job=part.job_id, stage=stage, seconds=round(spent, 1), limit_s=round(limit, 1),
                      node=part.node, pid=part.pid or None)
            self._last_stop = time.monotonic()
            _settle(part.future, error=HostStopped(stage, spent, limit, expected, part.pid, None))

    def _count_cluster(self, force: bool = False) -> None:
        """Host parts at once: the cluster's CPUs less one per CPU actor (at least one).

        Counted on a thread of its own, except when ``force``d right after joining: Ray's
        cluster_resources asks the GCS and waits without a bound when the cluster has just gone
        (a raylet killed), and the worker, which reads ``capacity`` at every step, must stay free
        to see ``lost`` and say so."""
        if not force and (time.monotonic() - self._cluster_checked < CLUSTER_CHECK_SECONDS
                          or self.lost is not None):
            return
        self._cluster_checked = time.monotonic()
        if force:
            self._read_cluster_size()
            return
        self._counting = threading.Thread(target=self._read_cluster_size, name="recond-ray-count", daemon=True)
        self._counting.start()

    @property
    def calls_left_in_ray(self) -> bool:
        """A count of the cluster still waits inside Ray: once a new cluster answers, that call
        aborts the process in Ray's C++ code (WrongClusterID), so the daemon must start afresh
        before the cluster is back (the worker's ``_wait_for_return``)."""
        return self._counting is not None and self._counting.is_alive()

    def _read_cluster_size(self) -> None:
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
        except Exception as error:  # the head is away for a moment: keep the last count
            log.debug("cluster size not read", error=str(error))
            return
        self._host_slots = max(1, cpus - self._cpu_actors)


def _is_ray_worker(pid: int) -> bool:
    """Is ``pid`` still a Ray worker process (Ray titles them "ray::...")? The worker may have
    ended and its pid gone to another process since it reported; that one is left alone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().startswith(b"ray::")
    except OSError:
        return False


def _bounded(step: Callable[[], None], what: str) -> None:
    """Run ``step`` on a thread given CLOSE_SECONDS; past that it is left behind (logged)."""
    thread = threading.Thread(target=step, name="recond-ray-close", daemon=True)
    thread.start()
    thread.join(CLOSE_SECONDS)
    if thread.is_alive():
        log.warning("a step of stopping did not end in time; left behind", step=what,
                    seconds=CLOSE_SECONDS)


def _lost(error: BaseException) -> WorkerLost | None:
    """The WorkerLost a Ray failure means (an actor, worker process or node gone), else None."""
    if isinstance(error, RayTaskError | TaskCancelledError) or not isinstance(error, RayError):
        return None
    if isinstance(error, RayActorError):
        what = "the Ray actor holding the model died"
    else:
        what = f"the Ray worker died ({type(error).__name__})"
    return WorkerLost(f"{what} while processing this file; the job is retried")


def _cause(error: BaseException) -> BaseException:
    """The part's own error (InputError ...) out of Ray's wrapper; a cancel is JobCancelled."""
    if isinstance(error, TaskCancelledError):
        return JobCancelled()
    if isinstance(error, RayTaskError) and error.cause is not None:
        return error.cause
    return error


def _failed(error: BaseException) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(error)
    return future


def _settle(future: Future[Any], value: Any = None, error: BaseException | None = None) -> None:
    """Resolve ``future`` once (a cancel and an outcome may race)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except Exception:  # already resolved (InvalidStateError)
        pass
