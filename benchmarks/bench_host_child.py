"""What running the host part in a child process costs (issue 22: host_workers = 0 and
``reconctl process`` now do, so that a stuck stage can be killed).

Three figures, on bench_chair's real hand-off (chair.png at the default settings: the density
box of a 256^3 grid, the 3 x 40 x 64 x 64 scene code, the decoder's weights):

- start: a fresh host process, spawned until it has imported the host part (once per daemon
  start and once after each stop; it overlaps the model's loading at start);
- per job: the hand-off to the process and the result back, with a host part that does no work
  (pickling, the pipe, unpickling), the median of --runs jobs;
- the host process's peak memory while idle (VmHWM), which a job's own work adds to.

    nice python benchmarks/bench_host_child.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BENCH_CHAIR = SHARED / "reference" / "bench_chair"
CHAIR = SHARED / "examples" / "chair.png"


def handed_over(handoff: Any, job: Any, result_dir: Path, report: Any = None, expected: Any = None) -> Any:
    """A host part that only proves it received the hand-off: the transfer is what is timed."""
    from recond.pipeline.contract import JobResult

    return JobResult(result_dir, [], {}, {"source": handoff.source_name})


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from recond.config import JobSettings, load_settings, part_of
    from recond.executors import HostTask
    from recond.executors.host_pool import HostPool
    from recond.pipeline.contract import SourcePicture
    from recond.pipeline.runner import Pipeline
    from recond.pipeline.warm import load_main_thread_libraries

    load_main_thread_libraries()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"command: {' '.join(sys.argv)}")
    with tempfile.TemporaryDirectory() as scratch:
        settings = load_settings(device="cpu", model=str(BENCH_CHAIR), rembg_home=Path(scratch) / "no-rembg")
        job = part_of(settings, JobSettings)
        pipeline = Pipeline(settings)
        handoff = pipeline.device_part(SourcePicture(CHAIR.name, CHAIR.read_bytes()), job)
        started = time.perf_counter()
        size = len(pickle.dumps(handoff))
        pickle_s = time.perf_counter() - started
        print(f"hand-off: {size / 2 ** 20:.1f} MiB pickled in {pickle_s * 1000:.0f} ms here")

        started = time.perf_counter()
        pool = HostPool(1, handed_over, lambda progress: None, torch_threads=len(os.sched_getaffinity(0)))
        try:
            folder = Path(scratch) / "job"
            folder.mkdir()
            pool.submit(HostTask(0, handoff, job, folder)).result(timeout=300)
            first_s = time.perf_counter() - started
            seconds = []
            for number in range(args.runs):
                started = time.perf_counter()
                pool.submit(HostTask(number + 1, handoff, job, folder)).result(timeout=300)
                seconds.append(time.perf_counter() - started)
            pid = pool.workers()[0].pid
            memory = peak_memory_mib(pid) if pid else float("nan")
        finally:
            pool.close()
    per_job = statistics.median(seconds)
    print(f"start (spawn + imports) and the first hand-off: {first_s:.2f} s")
    print(f"per job (hand-off there, result back), median of {args.runs}: {per_job * 1000:.0f} ms "
          f"(min {min(seconds) * 1000:.0f}, max {max(seconds) * 1000:.0f})")
    print(f"start alone, about: {first_s - per_job:.2f} s")
    print(f"host process peak memory, idle after {args.runs + 1} hand-offs: {memory:.0f} MiB")


if __name__ == "__main__":
    main()
