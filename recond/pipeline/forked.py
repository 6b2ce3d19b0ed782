"""A C call held to a time limit: run in a forked copy of this process, killed past the limit.

A C library call (xatlas's unwrap) cannot be interrupted from Python, and a thread running it
cannot be stopped. A fork of the host process shares its memory copy-on-write, so the call
needs no hand-off, and SIGKILL ends it wherever it is; the host process then goes on with a
fallback (recond.pipeline.texture: vertex colours). The copy is in the host process's group,
so the pool's kill of that group (recond.executors.host_pool) takes it too. os.fork rather
than multiprocessing: a host process is a daemonic multiprocessing process, which may not
start children of its own.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
from collections.abc import Callable
from typing import TypeVar

from recond.pipeline.progress import StageClock

T = TypeVar("T")
POLL_SECONDS = 0.5
READ_BYTES = 1 << 20


class ForkedCallFailed(RuntimeError):
    """The forked call raised, or its process died before it answered."""


def call_within(function: Callable[[], T], seconds: float, clock: StageClock) -> T | None:
    """``function()`` in a forked process: what it returned, or None when it ran past ``seconds``
    (it is killed then). While it runs, the stage reports its progress again every POLL_SECONDS,
    so a stopping daemon's cancellation (raised from the report) reaches it; the process is gone
    when this returns, whichever way."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: answer, then leave without running the parent's exit handlers
        os.close(read_end)
        _keep_to_one_cpu()
        try:
            answer = pickle.dumps(("value", function()))
        except BaseException as error:  # noqa: BLE001 (everything goes back as words)
            answer = pickle.dumps(("error", f"{type(error).__name__}: {error}"))
        with os.fdopen(write_end, "wb") as out:
            out.write(answer)
        os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + seconds
    chunks: list[bytes] = []
    try:
        while True:
            readable, _, _ = select.select([read_end], [], [], POLL_SECONDS)
            if readable:
                chunk = os.read(read_end, READ_BYTES)
                if not chunk:
                    break
                chunks.append(chunk)
                continue
            clock.again()
            if time.monotonic() > deadline:
                return None
    finally:
        os.close(read_end)
        status = _end(pid)
    if not chunks:
        how = (f"killed by {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
               else f"exit status {os.WEXITSTATUS(status)}")
        raise ForkedCallFailed(f"its process died ({how}) before it answered")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "error":
        raise ForkedCallFailed(value)
    return value


def _keep_to_one_cpu() -> None:
    """Hold the copy to the one CPU its parent last ran on, as the host process holds torch to
    one thread (recond.pipeline.tuning). xatlas starts a worker thread per CPU of the machine,
    and on this 2-core VM the unwrap's copy then spent up to 1.3 s of system time beside its
    1.5 s of work on one run in two (a fork per run, getrusage in the copy); kept to one CPU, it
    never did. The parent's own CPU, not a fixed one: the copies of the host processes of a
    many-core server stay spread as the kernel spread their parents."""
    try:
        with open("/proc/self/stat", "rb") as stat:  # field 39, after the name's closing bracket
            cpu = int(stat.read().rsplit(b")", 1)[1].split()[36])
        if cpu in os.sched_getaffinity(0):
            os.sched_setaffinity(0, {cpu})
    except (OSError, ValueError, IndexError):  # not Linux, or a container that forbids it: run as is
        pass


def _end(pid: int) -> int:
    """Kill the forked process if it still runs, reap it, and return its wait status."""
    finished, status = os.waitpid(pid, os.WNOHANG)
    if finished:
        return status
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]
