"""CPU seconds of the host part per job, stage by stage, on bench_chair's real hand-off (issue 23:
the host part, mesh through viewer, is what bounds a GPU server's jobs per second).

The device part runs once (chair.png through bench_chair at the default settings, or --quick's
smaller ones); its hand-off is then given to the host part --runs times in this one process, with
the host processes' one torch thread (recond.pipeline.tuning.HOST_THREADS). Each stage's CPU
seconds (this process's user + system time, children included: ffmpeg) and wall seconds are
printed, median over the runs. With --profile FILE the last run is also written as a cProfile
file (`python -m pstats FILE`) and its top functions by own time are printed.

    .venv/bin/python benchmarks/bench_host_part.py [--runs 3] [--profile host.prof] [--quick]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BENCH_CHAIR = SHARED / "reference" / "bench_chair"
CHAIR = SHARED / "examples" / "chair.png"
QUICK = {"mc_resolution": 128, "render_views": 8, "texture_resolution": 512}


def cpu_now() -> float:
    """This process's and its finished children's user + system seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class StageCpu:
    """A StageReport that notes the CPU and wall clock at each stage's first report."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float, float]] = []

    def __call__(self, stage: str, fraction: float) -> None:
        if not self.marks or self.marks[-1][0] != stage:
            self.marks.append((stage, cpu_now(), time.perf_counter()))

    def per_stage(self, end_cpu: float, end_wall: float) -> dict[str, tuple[float, float]]:
        ends = [(cpu, wall) for _, cpu, wall in self.marks[1:]] + [(end_cpu, end_wall)]
        return {stage: (cpu_end - cpu, wall_end - wall)
                for (stage, cpu, wall), (cpu_end, wall_end) in zip(self.marks, ends)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a job setting for the host part (e.g. --set texture_resolution=512)")
    args = parser.parse_args()
    from recond.config import JobSettings, load_settings, part_of
    from recond.pipeline.contract import SourcePicture
    from recond.pipeline.host import run_host_part
    from recond.pipeline.runner import Pipeline
    from recond.pipeline.tuning import host_threads
    from recond.pipeline.warm import load_main_thread_libraries
    from recond.workflows.redo import parse_assignments

    load_main_thread_libraries()
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cpus, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"command: {' '.join(sys.argv)}")
    extra = {**(QUICK if args.quick else {}), **parse_assignments(args.set)}
    with tempfile.TemporaryDirectory() as scratch:
        settings = load_settings(device="cpu", model=str(BENCH_CHAIR), rembg_home=Path(scratch) / "no-rembg",
                                 **extra)
        job = part_of(settings, JobSettings)
        handoff = Pipeline(settings).device_part(SourcePicture(CHAIR.name, CHAIR.read_bytes()), job)
        rows: list[dict[str, tuple[float, float]]] = []
        totals: list[float] = []
        profiler = cProfile.Profile() if args.profile else None
        for number in range(args.runs):
            folder = Path(scratch) / f"job{number}"
            folder.mkdir()
            clock = StageCpu()
            last = profiler is not None and number == args.runs - 1
            started = cpu_now()
            with host_threads():
                if last:
                    profiler.enable()
                result = run_host_part(handoff, job, folder, clock)
                if last:
                    profiler.disable()
            ended = cpu_now()
            rows.append(clock.per_stage(ended, time.perf_counter()))
            totals.append(ended - started)
        record = result.record
    print(f"mesh: {record['mesh']['marching_cubes_faces']} -> {record['faces']} faces; "
          f"textured {record['textured']}")
    print(f"{'stage':<10}{'CPU s':>8}{'wall s':>8}")
    for stage in rows[0]:
        cpu = statistics.median(row[stage][0] for row in rows)
        wall = statistics.median(row[stage][1] for row in rows)
        print(f"{stage:<10}{cpu:>8.2f}{wall:>8.2f}")
    print(f"{'host part':<10}{statistics.median(totals):>8.2f}  CPU s per job, median of {args.runs} "
          f"(min {min(totals):.2f}, max {max(totals):.2f})")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if profiler is not None:
        profiler.dump_stats(args.profile)
        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
