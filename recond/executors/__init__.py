"""Executors: where the two parts of a job run. The worker owns concurrency; an executor only
runs a part and returns its value (STYLE.md habit 13, issue 14).

The interface, for whoever writes an executor (inline.py, local.py; ray.py):

- The worker's ``build_executor(settings, pipeline_factory, on_progress)`` picks one from the
  settings (the modules here never import each other's executors). An
  executor is built by the worker thread, then ``start()`` loads the warm model(s) and returns
  :class:`DeviceFacts`; it raises when the model cannot load (the worker shows "model missing",
  keeps jobs queued and builds a new executor after ``model_retry_seconds``).
- Several devices on one machine (the ``devices`` setting): the local executor holds one warm
  pipeline per device (``build_device_pipelines``), each a device worker in ``workers()``.
- ``capacity``: how many jobs the worker may keep in flight, and ``device_slots``: how many of
  them may be in their device part (warm models). The worker claims a job from the store
  (SQLite stays the only queue) only while both have room.
- ``submit_device(DeviceTask) -> Future[DeviceOutput]``: load, background, encode, density grid
  on a warm model. The picture goes as bytes: nothing on the executor's side reads the inbox.
- ``submit_host(HostTask) -> Future[JobResult]``: the host part (the pipeline's ``host_part``,
  a module-level function: recond.pipeline.host.run_host_part) writing the result's files into
  ``task.result_dir``, a private staging folder the worker made in the daemon's filesystem. An
  executor on other hosts runs it into a temporary folder there and writes the returned files
  (``{name: bytes}``) into ``task.result_dir`` from the daemon process before the future
  resolves. Parts may be queued inside the executor until a slot is free.
- Progress: every part reports ``(stage, fraction)``; the executor hands each to
  ``on_progress(PartProgress)`` (from any thread of the daemon process). The worker records it
  (store, log, ETA); the ETA history (state_dir/stage_seconds.json) is written by the worker only.
- A future's exception says what happened to the job:
  ``JobCancelled`` after ``cancel()`` (the worker requeues it without counting an attempt);
  ``WorkerLost`` when the process/actor running it died (kill -9, OOM): the job loses one attempt
  and is retried (failed once out of ``max_attempts``), and the executor replaces the worker;
  any other exception is the part's own error (InputError, OSError ...), judged as before.
  A future may resolve with a value even after its worker died: the value counts.
- ``cancel()``: thread-safe (SIGTERM); every running or queued part ends soon with JobCancelled
  and no new part starts. ``close()`` then releases processes, threads and connections.
- ``lost``: None, or why the executor's workers are gone for good (a Ray cluster that stopped
  answering, issue 27): the worker then requeues the jobs in flight (no attempt counted), says
  so in status and ends the run, so that systemd starts recond again, which waits for them.
- ``workers() -> list[WorkerInfo]``: for `reconctl status` and /api/status (node, device,
  idle/busy, which job); the worker stores it in the daemon row whenever it changes.
- Where each part runs is a fact of the settings (:func:`runs_in_daemon`): the job database
  records it, so that a daemon crash charges an attempt only to a job whose part ran inside it.

Nothing run by an executor writes to the job database, the inbox or the outbox: publishing,
failing and requeueing stay in the worker (recond/worker.py) and the outbox and inbox wings.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from recond.config import JobSettings, ModelSettings, Settings, part_of
from recond.pipeline.contract import JobResult, SourcePicture, WarmPipeline
from recond.pipeline.handoff import DeviceOutput


class JobCancelled(BaseException):
    """A part was cancelled (the daemon is stopping); its job goes back to the queue.

    A BaseException, like asyncio.CancelledError, so that a stage's ``except Exception`` cannot
    turn a shutdown into a failed job.
    """


class WorkerLost(Exception):
    """The process (or Ray actor) running a part died; the job loses one attempt."""


@dataclass(frozen=True)
class PartProgress:
    """One progress report of a running part, as it comes back to the worker."""

    job_id: int
    stage: str
    fraction: float


@dataclass(frozen=True)
class DeviceTask:
    job_id: int
    source: SourcePicture  # the bytes the worker read and checked, the file's name and folder
    job: JobSettings


@dataclass(frozen=True)
class HostTask:
    job_id: int
    handoff: DeviceOutput
    job: JobSettings
    result_dir: Path  # empty staging folder on the daemon's side; see the module docstring
    expected_s: dict[str, float] | None = None  # stage seconds: the stages' time limits (progress.py)


@dataclass(frozen=True)
class DeviceFacts:
    """What the daemon row shows about the warm model."""

    model_id: str
    device: str
    background_method: str
    dtype: str = ""  # the encoder's dtype and why, e.g. "bfloat16 (CPU has avx512_bf16)"
    warning: str = ""  # something status must show loudly (a Ray cluster open to others)


@dataclass(frozen=True)
class WorkerInfo:
    """One place parts run, for status: 'device' holds a warm model, 'host' runs host parts."""

    name: str
    kind: str  # "device" or "host"
    node: str  # host name (Ray: the node's address)
    device: str  # cpu, cuda:0 ...
    busy: bool
    job_id: int | None = None
    pid: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def executor_shape(settings: Settings) -> tuple[object, ...]:
    """The settings an executor is built from: when a SIGHUP changes them, the worker builds a
    new one once no job is in flight."""
    return (part_of(settings, ModelSettings), settings.executor, settings.resolved_host_workers(),
            settings.isolate_host_part, settings.ray_address, settings.ray_device_workers)


def runs_in_daemon(settings: Settings, part: str) -> bool:
    """Does this part ("device" or "host") run inside the daemon process? Both do with
    host_workers = 0 (inline.py), the device part does beside host processes (local.py), and
    neither does on Ray (ray.py: actors and tasks in the cluster's processes)."""
    if settings.executor == "ray":
        return False
    return part == "device" or settings.resolved_host_workers() == 0


ProgressSink = Callable[[PartProgress], None]
PipelineFactory = Callable[[ModelSettings], WarmPipeline]


class Executor(Protocol):
    @property
    def capacity(self) -> int: ...  # read each time: a Ray cluster's size changes as nodes come and go

    @property
    def device_slots(self) -> int: ...

    def start(self) -> DeviceFacts: ...

    # True once this host's host processes have done their imports (at once when there are
    # none): what is left of them after start() would share the CPUs with the first device part.
    def wait_for_host_process(self, timeout: float) -> bool: ...

    def submit_device(self, task: DeviceTask) -> Future[DeviceOutput]: ...

    def submit_host(self, task: HostTask) -> Future[JobResult]: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...

    def workers(self) -> list[WorkerInfo]: ...

    @property
    def lost(self) -> str | None: ...



def build_device_pipelines(settings: ModelSettings, pipeline_factory: PipelineFactory) -> list[WarmPipeline]:
    """One warm pipeline per device of ``settings.resolved_devices()``, loaded one after another
    (each holds its own weights on its device: memory per model in docs/gpu-server.md)."""
    if len(settings.devices) <= 1:
        return [pipeline_factory(settings)]
    return [pipeline_factory(settings.on_device(device)) for device in settings.devices]


def device_worker_name(slot: int, count: int) -> str:
    """'device' for the one warm model, 'device-0', 'device-1' ... for several."""
    return "device" if count == 1 else f"device-{slot}"
