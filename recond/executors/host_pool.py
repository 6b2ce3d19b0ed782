"""A pool of host processes running host parts, each held to its stages' time limits (issues 14, 22).

The pool is a few ``multiprocessing`` processes managed here rather than a
``concurrent.futures.ProcessPoolExecutor``: that one breaks as a whole when one child dies
(BrokenProcessPool), while here a dead process costs only its own job one attempt and is
replaced. Processes are spawned, not forked: the daemon holds torch's threads, and forking a
threaded process is unsafe. Each one imports the host part only (torch, trimesh, xatlas), never
rembg or the full model; it ignores SIGTERM/SIGINT (the daemon decides when its job stops) and
dies with the daemon (PR_SET_PDEATHSIG), so no orphan keeps writing into a staging folder. It
leads a process group of its own, and the pool kills the group: a stage's child process (ffmpeg,
recond.pipeline.child) goes with it, even one frozen by SIGSTOP (issue 18).

A stage that runs past its limit is stopped here, whatever it is doing: a C call that does not
return (a simplification or an unwrap of a noisy surface) and a process frozen by SIGSTOP look
the same from outside, a stage that reports nothing new. The watcher kills the process's group
STOP_GRACE_SECONDS after the stage's limit (so a stage's own child, held to the limit in the
process, is stopped there first), starts a fresh process in its slot, and fails the part with
HostStopped, which the worker retries like any StageTimedOut (issue 22). Used by the local
executor (host_workers >= 1), by the inline one (host_workers = 0) and by ``reconctl process``.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import pickle
import signal
import socket
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from recond.errors import HostStopped
from recond.executors import (
    HostTask,
    JobCancelled,
    PartProgress,
    ProgressSink,
    WorkerInfo,
    WorkerLost,
)
from recond.logging import get_logger
from recond.pipeline.contract import HostPart, JobResult
from recond.pipeline.progress import DEFAULT_STAGE_SECONDS, HOST_STAGES, stage_limit_s
from recond.pipeline.tuning import freeze_heap, tune_torch

log = get_logger("recond.executors")

CONTEXT = get_context("spawn")
HOST_MODULE = "recond.pipeline.host"  # imported at a process's start, so its first job is warm
FIRST_HOST_STAGE = HOST_STAGES[0]  # the stage a part is in until its process reports one
# linux/prctl.h. The signal comes when the thread that started the process ends: the worker
# thread or the pool's watcher thread, both of which outlive the pool.
PR_SET_PDEATHSIG = 1
STOP_WAIT_SECONDS = 5.0
RESPAWN_PAUSE_SECONDS = 5.0  # before replacing a process that ended without a part
# Past a stage's limit, the process is killed this much later: a stage's child process (ffmpeg)
# is held to the limit inside the process (recond.pipeline.child), which says more, so it goes first.
STOP_GRACE_SECONDS = 3.0
# A process that has not finished its imports (torch, trimesh, xatlas: 3-10 s on a busy 2-core
# machine) gets this much longer for the first stage of a part it was handed.
START_ALLOWANCE_SECONDS = 120.0
WATCH_SECONDS = 0.5  # how often the watcher looks at the stages' clocks


class HostTraceback(Exception):
    """The traceback of an error raised in a host process, chained to the error as its cause."""


def serve_host_parts(tasks: Connection, results: Connection, parent_pid: int, torch_threads: int) -> None:
    """A host process: run each (host part, HostTask) received, sending progress and the outcome back."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the daemon died before the line above took effect
        return
    os.setpgid(0, 0)  # its stages' child processes join this group: killed together (_kill_group)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_torch(torch_threads)  # as every process that runs parts of jobs (pipeline/tuning.py)
    importlib.import_module(HOST_MODULE)
    freeze_heap()  # its libraries stay: collections during a part scan only the part's objects
    results.send(("ready",))  # a part's clock runs from here (or from its hand-off, if later)
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
    """One process of the pool and the part it runs (None: idle), with its stage's clock."""

    slot: int
    process: BaseProcess
    tasks: Connection  # the daemon writes
    results: Connection  # the daemon reads
    task: HostTask | None = None
    future: Future[JobResult] | None = field(default=None, repr=False)
    ready: bool = False  # its imports are done
    stage: str = FIRST_HOST_STAGE
    stage_started: float = 0.0  # monotonic

    def info(self) -> WorkerInfo:
        job = self.task.job_id if self.task else None
        return WorkerInfo(f"host-{self.slot}", "host", socket.gethostname(), "cpu", job is not None,
                          job, self.process.pid)

    def begin(self, task: HostTask, future: Future[JobResult]) -> None:
        self.task, self.future = task, future
        self.stage, self.stage_started = FIRST_HOST_STAGE, time.monotonic()

    def overdue(self, now: float) -> tuple[str, float, float, float] | None:
        """(stage, seconds spent, limit, expected seconds) when its part's stage ran past the
        limit, else None."""
        return None if self.task is None else overdue_stage(self.task, self.stage, self.stage_started, self.ready, now)


def overdue_stage(task: HostTask, stage: str, stage_started: float, started: bool,
                  now: float) -> tuple[str, float, float, float] | None:
    """(stage, seconds spent, limit, expected seconds) when a host part's ``stage``, begun at
    ``stage_started`` (monotonic), ran past its limit and STOP_GRACE_SECONDS, plus
    START_ALLOWANCE_SECONDS while the part has not ``started`` (its process still importing);
    else None. The host pool's processes and the Ray executor's host tasks are held to it."""
    expected = (task.expected_s or DEFAULT_STAGE_SECONDS).get(stage, DEFAULT_STAGE_SECONDS[stage])
    limit = stage_limit_s(expected, task.job.stage_limit_factor, task.job.stage_limit_floor_s)
    spent = now - stage_started
    allowed = limit + STOP_GRACE_SECONDS + (0.0 if started else START_ALLOWANCE_SECONDS)
    return (stage, spent, limit, expected) if spent > allowed else None


class HostPool:
    """``size`` host processes; a dead one is replaced, and its part fails with WorkerLost; one
    whose stage runs past its limit is killed and replaced, and its part fails with HostStopped."""

    def __init__(self, size: int, host_part: HostPart, on_progress: ProgressSink, torch_threads: int = 1) -> None:
        self.host_part = host_part  # module-level or by name: it pickles as its name
        self.on_progress = on_progress
        self.torch_threads = torch_threads
        self._lock = threading.Lock()
        self._pending: deque[tuple[HostTask, Future[JobResult]]] = deque()
        self._cancelled = False
        self._closed = False
        self._empty_slots: dict[int, float] = {}  # slot -> when to start its next process
        self._readiness = threading.Condition(self._lock)  # notified as each process finishes its imports
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

    def wait_ready(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until every process has done its imports. A caller with
        nothing else to do meanwhile (``reconctl process``) waits here, so its first device part
        does not share the CPUs with a host process still importing torch (issue 26)."""
        with self._readiness:
            return self._readiness.wait_for(lambda: all(host.ready for host in self._processes), timeout)

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
            ready = wait([self._wake_reader, *(host.results for host in processes), *sentinels],
                         timeout=WATCH_SECONDS)
            for host in processes:
                if host.results in ready:
                    self._receive(host)
            for sentinel in ready:
                if sentinel in sentinels:
                    self._receive(sentinels[sentinel])  # what it sent before it died counts
                    self._replace(sentinels[sentinel])
            if self._wake_reader in ready:
                self._wake_reader.recv()
            self._stop_overdue()
            self._refill()

    def _receive(self, host: HostProcess) -> None:
        try:
            while host.results.poll():
                self._handle(host, host.results.recv())
        except (EOFError, OSError):
            pass  # the process is gone: its sentinel says so

    def _handle(self, host: HostProcess, message: tuple[Any, ...]) -> None:
        """("ready",), ("progress", stage, fraction), ("done", JobResult) or ("error", error, traceback)."""
        if message[0] == "ready":
            with self._readiness:
                host.ready = True
                self._readiness.notify_all()
            host.stage_started = time.monotonic()  # a part handed over meanwhile starts now
            return
        task, future = host.task, host.future
        if task is None or future is None:
            return
        if message[0] == "progress":
            if message[1] != host.stage:
                host.stage, host.stage_started = message[1], time.monotonic()
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

    def _stop_overdue(self) -> None:
        """Kill every process whose stage ran past its limit, start a fresh one in its slot,
        and fail its part with HostStopped (naming both processes)."""
        now = time.monotonic()
        with self._lock:
            if self._cancelled:
                return
            overdue = [(host, facts) for host in self._processes if (facts := host.overdue(now))]
        for host, (stage, spent, limit, expected) in overdue:
            _kill_group(host.process)
            host.process.join(STOP_WAIT_SECONDS)
            with self._lock:
                task, future = host.task, host.future
                host.task = host.future = None
                if host in self._processes:
                    self._processes.remove(host)
                fresh = self._spawn(host.slot)
                self._processes.append(fresh)
                assigned = self._assign()
            log.error("host process stopped: a stage ran past its limit; a fresh one took its place",
                      job=task.job_id if task else None, stage=stage, seconds=round(spent, 1),
                      limit_s=round(limit, 1), pid=host.process.pid, fresh_pid=fresh.process.pid)
            if future is not None and not future.done():
                future.set_exception(HostStopped(stage, spent, limit, expected, host.process.pid or 0,
                                                 fresh.process.pid))
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
            if host not in self._processes:  # stopped past its limit: already replaced
                return
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
        process = CONTEXT.Process(target=serve_host_parts,
                                  args=(task_reader, result_writer, os.getpid(), self.torch_threads),
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
                host.begin(*self._pending.popleft())
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
