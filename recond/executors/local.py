"""host_workers >= 1, one machine: the warm model serves device parts on one thread of the
daemon while a pool of worker processes runs host parts (issue 14).

The pool is a few ``multiprocessing`` processes managed here rather than a
``concurrent.futures.ProcessPoolExecutor``: that one breaks as a whole when one child dies
(BrokenProcessPool), while here a dead process costs only its own job one attempt and is
replaced. Processes are spawned, not forked: the daemon holds torch's threads, and forking a
threaded process is unsafe. Each one imports the host part only (torch, trimesh, xatlas), never
rembg or the full model; it ignores SIGTERM/SIGINT (the daemon decides when its job stops) and
dies with the daemon (PR_SET_PDEATHSIG), so no orphan keeps writing into a staging folder. It
leads a process group of its own, and the pool kills the group: a stage's child process (ffmpeg,
recond.pipeline.child) goes with it, even one frozen by SIGSTOP (issue 18).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import pickle
import queue
import signal
import socket
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from recond.config import ModelSettings, Settings, part_of
from recond.executors import (DeviceFacts, DeviceTask, HostTask, JobCancelled, PartProgress,
                              PipelineFactory, ProgressSink, WorkerInfo, WorkerLost,
                              build_device_pipelines, device_worker_name)
from recond.executors.inline import CancellableReports, device_part
from recond.logging import get_logger
from recond.pipeline.contract import HostPart, JobResult, WarmPipeline
from recond.pipeline.handoff import DeviceOutput

log = get_logger("recond.executors")

CONTEXT = get_context("spawn")
HOST_MODULE = "recond.pipeline.host"  # imported at a process's start, so its first job is warm
# Torch threads per host process: the processes already share the cores between them (and the
# device thread), and most of a host part (mcubes, xatlas, simplification) is single-threaded.
HOST_TORCH_THREADS = 1
# linux/prctl.h. The signal comes when the thread that started the process ends: the worker
# thread or the pool's watcher thread, both of which outlive the pool.
PR_SET_PDEATHSIG = 1
STOP_WAIT_SECONDS = 5.0
RESPAWN_PAUSE_SECONDS = 5.0  # before replacing a process that ended without a part


class HostTraceback(Exception):
    """The traceback of an error raised in a host process, chained to the error as its cause."""


def serve_host_parts(tasks: Connection, results: Connection, parent_pid: int) -> None:
    """A host process: run each (host part, HostTask) received, sending progress and the outcome back."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the daemon died before the line above took effect
        return
    os.setpgid(0, 0)  # its stages' child processes join this group: killed together (_kill_group)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(HOST_TORCH_THREADS)
    importlib.import_module(HOST_MODULE)
    while True:
        try:
            host_part, task = tasks.recv()
        except EOFError:  # the daemon closed the pool
            return
        try:
            value = host_part(task.handoff, task.job, task.result_dir,
                              lambda stage, fraction: results.send(("progress", stage, fraction)), task.expected_s)
        except Exception as error:
            results.send(("error", _sendable(error), traceback.format_exc()))
        else:
            results.send(("done", value))


def _sendable(error: Exception) -> Exception:
    """The error itself when it pickles (InputError, OSError ...), else its text."""
    try:
        pickle.dumps(error)
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


@dataclass
class HostProcess:
    """One process of the pool and the part it runs (None: idle)."""

    slot: int
    process: BaseProcess
    tasks: Connection  # the daemon writes
    results: Connection  # the daemon reads
    task: HostTask | None = None
    future: Future[JobResult] | None = field(default=None, repr=False)

    def info(self) -> WorkerInfo:
        job = self.task.job_id if self.task else None
        return WorkerInfo(f"host-{self.slot}", "host", socket.gethostname(), "cpu", job is not None,
                          job, self.process.pid)


class HostPool:
    """``size`` host processes; a dead one is replaced, and its part fails with WorkerLost."""

    def __init__(self, size: int, host_part: HostPart, on_progress: ProgressSink) -> None:
        self.host_part = host_part  # module-level: it pickles as its name
        self.on_progress = on_progress
        self._lock = threading.Lock()
        self._pending: deque[tuple[HostTask, Future[JobResult]]] = deque()
        self._cancelled = False
        self._closed = False
        self._empty_slots: dict[int, float] = {}  # slot -> when to start its next process
        self._wake_reader, self._wake_writer = CONTEXT.Pipe(duplex=False)
        self._processes = [self._spawn(slot) for slot in range(size)]
        self._watcher = threading.Thread(target=self._watch, name="recond-host-pool", daemon=True)
        self._watcher.start()

    def submit(self, task: HostTask) -> Future[JobResult]:
        future: Future[JobResult] = Future()
        with self._lock:
            if self._cancelled:
                future.set_exception(JobCancelled())
                return future
            self._pending.append((task, future))
            assigned = self._assign()
        self._send(assigned)
        return future

    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            return [host.info() for host in sorted(self._processes, key=lambda host: host.slot)]

    def cancel(self) -> None:
        """Kill the processes running parts and fail every part, running or waiting, with
        JobCancelled; the pool takes no more parts."""
        with self._lock:
            self._cancelled = True
            waiting, self._pending = list(self._pending), deque()
            busy = [host for host in self._processes if host.task is not None]
        for _, future in waiting:
            future.set_exception(JobCancelled())
        for host in busy:
            _kill_group(host.process)

    def close(self) -> None:
        """Cancel, let idle processes end, and wait for every process and the watcher."""
        self.cancel()
        with self._lock:
            self._closed = True
            processes = list(self._processes)
        for host in processes:
            host.tasks.close()  # an idle process reads the end of its task pipe and returns
        for host in processes:
            host.process.join(STOP_WAIT_SECONDS)
            if host.process.is_alive():
                _kill_group(host.process)
                host.process.join()
        self._wake_writer.send(None)
        self._watcher.join()

    # In the watcher thread.

    def _watch(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                processes = list(self._processes)
            sentinels = {host.process.sentinel: host for host in processes}
            ready = wait([self._wake_reader, *(host.results for host in processes), *sentinels], timeout=1.0)
            for host in processes:
                if host.results in ready:
                    self._receive(host)
            for sentinel in ready:
                if sentinel in sentinels:
                    self._receive(sentinels[sentinel])  # what it sent before it died counts
                    self._replace(sentinels[sentinel])
            if self._wake_reader in ready:
                self._wake_reader.recv()
            self._refill()

    def _receive(self, host: HostProcess) -> None:
        try:
            while host.results.poll():
                self._handle(host, host.results.recv())
        except (EOFError, OSError):
            pass  # the process is gone: its sentinel says so

    def _handle(self, host: HostProcess, message: tuple[Any, ...]) -> None:
        """("progress", stage, fraction), ("done", JobResult) or ("error", error, traceback)."""
        task, future = host.task, host.future
        if task is None or future is None:
            return
        if message[0] == "progress":
            self.on_progress(PartProgress(task.job_id, message[1], message[2]))
            return
        with self._lock:
            host.task = host.future = None
            assigned = self._assign()
        if message[0] == "done":
            future.set_result(message[1])
        else:
            error = message[1]
            error.__cause__ = HostTraceback(message[2])
            future.set_exception(error)
        self._send(assigned)

    def _replace(self, host: HostProcess) -> None:
        """A process ended: its part fails (WorkerLost, or JobCancelled after cancel) and,
        unless the pool is closing, a fresh process takes its slot: at once when it died
        running a part, after RESPAWN_PAUSE_SECONDS when it died idle (it may not start at all)."""
        host.process.join()
        _kill_group(host.process)  # a child process its stage left behind (the OOM killer took the parent)
        reason = _exit_reason(host.process.exitcode)
        with self._lock:
            task, future = host.task, host.future
            host.task = host.future = None
            if host in self._processes:
                self._processes.remove(host)
            self._empty_slots[host.slot] = time.monotonic() + (0.0 if task else RESPAWN_PAUSE_SECONDS)
            cancelled = self._cancelled
        if task is None and not cancelled:  # the worker logs what a death under a job did to it
            log.warning("host worker process ended while idle; replaced shortly", pid=host.process.pid,
                        reason=reason, retry_in_s=RESPAWN_PAUSE_SECONDS)
        if future is not None and task is not None and not future.done():
            future.set_exception(JobCancelled() if cancelled else WorkerLost(
                f"the host worker process {host.process.pid} died ({reason}) while processing this file"))

    def _refill(self) -> None:
        """Start processes in the slots whose time has come, and give them waiting parts."""
        with self._lock:
            if self._cancelled:
                return
            now = time.monotonic()
            for slot, due in list(self._empty_slots.items()):
                if due <= now:
                    del self._empty_slots[slot]
                    self._processes.append(self._spawn(slot))
            assigned = self._assign()
        self._send(assigned)

    # Under the lock.

    def _spawn(self, slot: int) -> HostProcess:
        task_reader, task_writer = CONTEXT.Pipe(duplex=False)
        result_reader, result_writer = CONTEXT.Pipe(duplex=False)
        process = CONTEXT.Process(target=serve_host_parts, args=(task_reader, result_writer, os.getpid()),
                                  name=f"recond-host-{slot}", daemon=True)
        process.start()
        task_reader.close()  # the child's ends: closed here, so its death reads as end of file
        result_writer.close()
        return HostProcess(slot, process, task_writer, result_reader)

    def _assign(self) -> list[HostProcess]:
        """Give waiting parts to idle processes; returns those that have a task to be sent."""
        assigned = []
        for host in self._processes:
            if not self._pending:
                break
            if host.task is None:
                host.task, host.future = self._pending.popleft()
                assigned.append(host)
        return assigned

    # Outside the lock, each on a thread of its own: a hand-off is megabytes, more than a pipe
    # holds, and a process just started reads it only once its imports are done (seconds).

    def _send(self, assigned: list[HostProcess]) -> None:
        for host in assigned:
            if host.task is not None:
                threading.Thread(target=_send_task, args=(host.tasks, (self.host_part, host.task)),
                                 name=f"recond-host-{host.slot}-send", daemon=True).start()


def _send_task(tasks: Connection, message: tuple[HostPart, HostTask]) -> None:
    try:
        tasks.send(message)
    except OSError:
        pass  # the process died meanwhile: the watcher fails its part and replaces it


def _kill_group(process: BaseProcess) -> None:
    """SIGKILL a host process and every process of its group (the child processes of its stage)."""
    if process.pid is None:  # never started (and killpg(0) would be the daemon's own group)
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group's id is the leader's pid
    except (ProcessLookupError, PermissionError):
        pass  # no such group: every member has ended
    process.kill()  # one that had not made its group yet (a no-op once it has ended)


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit status {exitcode}"


class LocalExecutor:
    """Warm pipelines on device threads (one per device in ``devices``, else one) and
    ``host_workers`` host processes serving them all."""

    def __init__(self, settings: Settings, pipeline_factory: PipelineFactory, on_progress: ProgressSink,
                 host_workers: int) -> None:
        self.model_settings = part_of(settings, ModelSettings)
        self.pipeline_factory = pipeline_factory
        self.on_progress = on_progress
        self.host_workers = host_workers
        self.device_slots = max(1, len(self.model_settings.devices))
        self.capacity = host_workers + self.device_slots  # a job on each device while each host process runs one
        self.reports = CancellableReports(on_progress)
        self.pipelines: list[WarmPipeline] = []
        self._free_devices: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._device_jobs: dict[int, int] = {}  # device slot -> the job in its device part
        self._device_thread = ThreadPoolExecutor(self.device_slots, thread_name_prefix="recond-device")
        self._hosts: HostPool | None = None

    @property
    def pipeline(self) -> WarmPipeline | None:
        """The first warm pipeline (the only one unless ``devices`` names several)."""
        return self.pipelines[0] if self.pipelines else None

    def start(self) -> DeviceFacts:
        self.pipelines = build_device_pipelines(self.model_settings, self.pipeline_factory)
        for slot in range(len(self.pipelines)):
            self._free_devices.put(slot)
        on_cpu = sum(1 for pipeline in self.pipelines if pipeline.device == "cpu")
        if on_cpu:
            import torch

            # The host processes take a core each: a device part whose OpenMP threads wait on
            # cores they share ran 2-3x slower than alone (bench_throughput.py on 2 CPUs).
            # Several models on the CPU share what is left.
            torch.set_num_threads(max(1, (len(os.sched_getaffinity(0)) - self.host_workers) // on_cpu))
        first = self.pipelines[0]
        self._hosts = HostPool(self.host_workers, first.host_part, self.on_progress)
        return DeviceFacts(first.model_id, ", ".join(pipeline.device for pipeline in self.pipelines),
                           first.background_method, str(first.dtype))

    def submit_device(self, task: DeviceTask) -> Future[DeviceOutput]:
        return self._device_thread.submit(self._device_part, task)

    def submit_host(self, task: HostTask) -> Future[JobResult]:
        assert self._hosts is not None, "parts run only once start() loaded the model"
        return self._hosts.submit(task)

    def cancel(self) -> None:
        self.reports.cancelled.set()
        if self._hosts is not None:
            self._hosts.cancel()

    def close(self) -> None:
        self.cancel()
        if self._hosts is not None:
            self._hosts.close()
        self._device_thread.shutdown(wait=True, cancel_futures=True)
        self.pipelines = []

    def workers(self) -> list[WorkerInfo]:
        devices = ([pipeline.device for pipeline in self.pipelines]
                   or list(self.model_settings.devices) or [self.model_settings.device])
        jobs = dict(self._device_jobs)
        own = [WorkerInfo(device_worker_name(slot, len(devices)), "device", socket.gethostname(), device,
                          slot in jobs, jobs.get(slot), os.getpid()) for slot, device in enumerate(devices)]
        return [*own, *(self._hosts.workers() if self._hosts else [])]

    def _device_part(self, task: DeviceTask) -> DeviceOutput:
        assert self.pipelines, "parts run only once start() loaded the model"
        # The worker keeps at most device_slots parts here, so a device is always free.
        slot = self._free_devices.get(timeout=STOP_WAIT_SECONDS)
        self._device_jobs[slot] = task.job_id
        try:
            return device_part(self.pipelines[slot], task, self.reports)
        finally:
            del self._device_jobs[slot]
            self._free_devices.put(slot)
