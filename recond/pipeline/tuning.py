"""torch's CPU set-up, the same in every process and thread that runs parts of jobs: the
Pipeline when it is made, the daemon's host processes and Ray's host tasks when they start
(issue 26: `reconctl process` and a Python Pipeline ran 3-4x slower than the daemon on one
picture; the daemon's executors had set what the others had not).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

# Torch threads for a host part (mesh to viewer). In a host process, beside the device part, one
# thread each (they share the cores); and in the process that ran the device part too, where a
# profile of `reconctl process` on a loaded 2-core machine found 35% of the samples in libgomp,
# OpenMP threads waiting for each other, and the turntable 5-8x slower than in a host process.
HOST_THREADS = 1


def tune_torch(threads: int | None = None) -> None:
    """Set torch's CPU knobs the same way in every process and thread that runs parts of jobs
    (issue 26: `reconctl process` and a Python Pipeline ran 3-4x slower than the daemon on one
    picture). Call it before torch's first parallel work in the thread: its thread pool inherits
    the flag.

    - Denormal floats are flushed to zero: the decoder's and the renderer's tiny activations fall
      into that range, where each operation costs up to ~100x on x86 (an FPU flag per thread;
      torch.set_flush_denormal); flushing them brought the issue's run from 61 s to 23 s.
    - ``threads``: torch's intra-op threads (None leaves them): see ``cpu_threads``.
    """
    import torch

    torch.set_flush_denormal(True)
    if threads is not None:
        torch.set_num_threads(threads)


def cpu_threads(beside: int = 0) -> int:
    """Intra-op threads for a device part on the CPU: the CPUs this process may use
    (sched_getaffinity, not torch's count of the machine's cores) less the processes that run
    beside it; OpenMP threads that wait on cores they share ran 2-3x slower than alone
    (bench_throughput.py on 2 CPUs)."""
    return max(1, len(os.sched_getaffinity(0)) - beside)


@contextmanager
def host_threads() -> Iterator[None]:
    """Run a host part in this process with HOST_THREADS torch threads, then restore them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(HOST_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def freeze_heap() -> None:
    """Move what is alive now (the model, the libraries) out of the garbage collector's reach:
    every later collection then scans only a job's own objects. The same profile found 9% of
    the samples in gc_collect_main in a process that held the model (gc.freeze, Python 3.7+)."""
    gc.collect()
    gc.freeze()
