"""Jobs per minute with host processes beside the warm model (issue 14): host_workers 0, 1, 2.

Eight distinct pictures (``examples/chair.png`` with one transparent corner pixel changed in
each, so the bytes differ while the object stays: bench_chair's decoder gives a chair only for
chair.png's scene code) go through the real worker (recond/worker.py) with bench_chair at
default settings, in a fresh process per run. Each run waits until the model is loaded and the
host processes had ``--warmup`` seconds to import, queues the pictures, and times them from the
queue to the last published result. It prints wall time, jobs per minute, the speed-up over
host_workers = 0 and the peak RSS of the daemon process and of each host process.

Then the same with a *simulated GPU*: the device part replaced by a stand-in that waits a fixed
time without using the CPU, as a GPU leaves the CPU free, and hands on bench_chair's real
hand-off for chair.png (with each picture's own bytes): 1.0 s (a mid-range GPU on the full
TripoSR) and 0.2 s (an H100-class one; ``--device-seconds``). Throughput then follows
max(device, host / workers) instead of device + host.

Each row also prints the CPU seconds per job spent in the timed window by the daemon process
and its host processes (/proc/<pid>/stat): with the simulated GPU that is the host part's cost
(plus the worker's bookkeeping), the figure that sizes a GPU server's CPU.

The Ray row (executor = "ray", 2 device actors) runs on a private Ray started inside the run
(ray_address = "local": all CPUs of this machine); its start-up is not timed, its device
actors' peak RSS is printed beside the daemon's. It has no simulated-GPU row: the actors build
their own pipelines.

The machine is shared: the load average is printed before and after; compare ratios of one run.

    python benchmarks/bench_throughput.py [--pictures 8] [--host-workers 0,1,2] [--skip-simulated]
        [--device-seconds 1.0,0.2] [--skip-real] [--skip-ray]

tests/benchmarks/test_bench_throughput.py runs the simulated path at a tiny size, so it keeps
working as the worker's contract with a pipeline changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BENCH_CHAIR = SHARED / "reference" / "bench_chair"
CHAIR = SHARED / "examples" / "chair.png"
DEVICE_SECONDS = (1.0, 0.2)  # a mid-range GPU on full TripoSR; an H100-class one

from recond.config import DTypeChoice, JobSettings, ModelSettings, load_settings, part_of  # noqa: E402
from recond.inbox.dropped import read_source  # noqa: E402
from recond.executors import PipelineFactory  # noqa: E402
from recond.pipeline.contract import JobResult, ProgressCallback, SourcePicture, WarmPipeline  # noqa: E402
from recond.pipeline.handoff import DeviceOutput  # noqa: E402
from recond.pipeline.host import run_host_part  # noqa: E402
from recond.pipeline.record import sha256_of_bytes  # noqa: E402
from recond.pipeline.runner import Pipeline  # noqa: E402
from recond.pipeline.warm import build_pipeline  # noqa: E402
from recond.store import DONE, FAILED, Store  # noqa: E402
from recond.worker import Worker  # noqa: E402


def distinct_chairs(folder: Path, count: int) -> list[Path]:
    """chair.png with the top-left pixel (transparent) given a different colour in each copy."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    chair = Image.open(CHAIR).convert("RGBA")
    assert chair.getpixel((0, 0))[3] == 0, "the corner pixel must be transparent"
    pictures = []
    for index in range(count):
        copy = chair.copy()
        copy.putpixel((0, 0), (index + 1, 0, 0, 0))
        path = folder / f"chair_{index:02d}.png"
        copy.save(path)
        pictures.append(path)
    return pictures


class SimulatedGpu:
    """A warm pipeline (recond.pipeline.contract.WarmPipeline) whose device part takes
    ``seconds`` of waiting and no CPU, handing on bench_chair's real hand-off of chair.png; the
    host part is the real one."""

    host_part = staticmethod(run_host_part)

    def __init__(self, settings: ModelSettings, seconds: float, job: JobSettings) -> None:
        real = Pipeline(settings)
        self.model_id, self.background_method = real.model_id, real.background_method
        self.device = "simulated GPU"
        self.dtype = DTypeChoice(real.dtype.name, f"stand-in waiting {seconds:g} s per picture")
        self.seconds = seconds
        self.template = real.device_part(read_source(CHAIR, job.max_file_bytes), job)

    def device_part(self, source: SourcePicture, job: JobSettings, report: Any = None) -> DeviceOutput:
        time.sleep(self.seconds)
        return dataclasses.replace(self.template, source_name=source.name, source_folder=source.folder,
                                   source_bytes=source.data, sha256=sha256_of_bytes(source.data))

    def run(self, source: SourcePicture, result_dir: Path, job: JobSettings,
            progress: ProgressCallback | None = None) -> JobResult:
        return run_host_part(self.device_part(source, job), job, result_dir)


def simulated_gpu(seconds: float, job: JobSettings) -> PipelineFactory:
    """The worker's pipeline factory for a stand-in of ``seconds`` per device part, whose
    hand-off is made with ``job``'s settings (its grid size above all)."""
    def factory(settings: ModelSettings) -> WarmPipeline:
        return SimulatedGpu(settings, seconds, job)

    return factory


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process, all its threads (/proc/<pid>/stat, proc(5))."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


def peak_rss_mib(pid: int) -> float | None:
    """A live process's peak resident memory (VmHWM), MiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return None


def run_once(pictures: list[Path], overrides: dict[str, Any], device_seconds: float | None,
             warmup: float) -> dict[str, Any]:
    """One configuration, in this process: the worker on a fresh state dir, the pictures queued
    at once once it is warm; wall seconds, CPU seconds and peak RSS figures. ``device_seconds``:
    the simulated GPU's seconds per device part (None: the real device part on this CPU)."""
    scratch = Path(tempfile.mkdtemp(prefix="bench_throughput_"))
    settings = load_settings(model=str(BENCH_CHAIR), device="cpu", inbox=scratch / "inbox",
                             outbox=scratch / "outbox", state_dir=scratch / "state", **overrides)
    for folder in (settings.inbox, settings.outbox):
        folder.mkdir(parents=True)
    store = Store(settings.db_path)
    store.daemon_started(os.getpid())
    factory = (build_pipeline if device_seconds is None
               else simulated_gpu(device_seconds, part_of(settings, JobSettings)))
    worker = Worker(settings, store, pipeline_factory=factory)
    worker.start()
    try:
        wait_until(lambda: model_ready(store), 600)
        time.sleep(warmup)  # host processes import torch, trimesh and xatlas meanwhile
        executor = worker.executor
        pids = {os.getpid(), *(info.pid for info in (executor.workers() if executor else []) if info.pid)}
        cpu_before = {pid: cpu_seconds(pid) for pid in pids}
        for picture in pictures:
            data = picture.read_bytes()
            (settings.inbox / picture.name).write_bytes(data)
            store.enqueue(picture.name, sha256_of_bytes(data), len(data), picture.stem)
        started = time.monotonic()
        worker.wake()
        wait_until(lambda: store.counts()[DONE] + store.counts()[FAILED] == len(pictures), 3600)
        wall = time.monotonic() - started
        cpu_after = {pid: cpu_seconds(pid) for pid in pids}
        workers = executor.workers() if executor else []
        host_rss = [peak_rss_mib(info.pid) for info in workers if info.kind == "host" and info.pid]
        device_rss = [peak_rss_mib(info.pid) for info in workers
                      if info.kind == "device" and info.pid not in (None, os.getpid())]
    finally:
        worker.stop()
    # A process replaced during the run (none expected) is left out rather than guessed.
    spent = sum(after - before for pid, after in cpu_after.items()
                if after is not None and (before := cpu_before.get(pid)) is not None)
    return {"jobs": store.counts()[DONE], "failed": store.counts()[FAILED], "wall_s": wall,
            "cpu_s_per_job": spent / max(1, len(pictures)),
            "daemon_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "host_peak_rss_mib": host_rss, "device_peak_rss_mib": device_rss,
            "jobs_at_once": executor.capacity if executor else None}


def model_ready(store: Store) -> bool:
    """Whether the worker's model loaded; raises at once when it did not (rather than waiting
    the hour the jobs are given: the stand-in once lacked ``dtype`` and this run hung)."""
    state = store.daemon_state() or {}
    if state.get("model_status") == "missing":
        raise RuntimeError(f"model not loaded: {state.get('model_detail')}")
    return state.get("model_status") == "ready"


def wait_until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark's jobs did not finish in time")
        time.sleep(0.1)


def ray_runs() -> list[tuple[str, dict[str, Any]]]:
    """The Ray row: 2 device actors and host tasks on a private local Ray (needs the ray extra)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        print("ray, 2 actors: not run, Ray is not installed (pip install -e '.[ray]')")
        return []
    return [("ray, 2 actors", {"executor": "ray", "ray_address": "local", "ray_device_workers": 2})]


def in_child(pictures: list[Path], overrides: dict[str, Any], device_seconds: float | None,
             warmup: float) -> dict[str, Any]:
    """run_once in a fresh process, so each run's peak RSS is its own."""
    command = [sys.executable, __file__, "--run-once", json.dumps(
        {"pictures": [str(p) for p in pictures], "overrides": overrides, "device_seconds": device_seconds,
         "warmup": warmup})]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def print_table(title: str, rows: list[tuple[str, dict[str, Any]]]) -> None:
    print(f"\n== {title} ==")
    print(f"{'run':<22}{'jobs':>5}{'wall s':>9}{'jobs/min':>10}{'speed-up':>10}{'CPU s/job':>10}"
          f"{'daemon MiB':>12}  host MiB (each)")
    baseline = None
    for label, result in rows:
        if "error" in result:
            print(f"{label:<22}  not run: {result['error']}")
            continue
        per_minute = 60 * result["jobs"] / result["wall_s"]
        baseline = baseline or per_minute
        hosts = ", ".join(f"{mib:.0f}" for mib in result["host_peak_rss_mib"] if mib) or "-"
        devices = ", ".join(f"{mib:.0f}" for mib in result.get("device_peak_rss_mib", []) if mib)
        print(f"{label:<22}{result['jobs']:>5}{result['wall_s']:>9.1f}{per_minute:>10.2f}"
              f"{per_minute / baseline:>9.2f}x{result['cpu_s_per_job']:>10.2f}"
              f"{result['daemon_peak_rss_mib']:>12.0f}  {hosts}"
              + (f"; device actors MiB (each): {devices}" if devices else "")
              + (f"  ({result['failed']} failed)" if result["failed"] else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=8)
    parser.add_argument("--host-workers", default="0,1,2", help="comma-separated host_workers values")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds for host processes to start")
    parser.add_argument("--skip-simulated", action="store_true")
    parser.add_argument("--skip-real", action="store_true",
                        help="only the simulated-GPU tables (the real device part on this CPU is the slow part)")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--device-seconds", default=",".join(f"{s:g}" for s in DEVICE_SECONDS),
                        help="comma-separated seconds per device part of the simulated GPUs")
    parser.add_argument("--run-once", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_once:
        job = json.loads(args.run_once)
        print(json.dumps(run_once([Path(p) for p in job["pictures"]], job["overrides"], job["device_seconds"],
                                  job["warmup"])))
        return

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, load average "
          + ", ".join(f"{value:.2f}" for value in os.getloadavg()))
    print(f"model {BENCH_CHAIR.name}, default settings (mc_resolution {JobSettings().mc_resolution}, "
          f"texture {JobSettings().texture_resolution}, {JobSettings().render_views} views), "
          f"{args.pictures} distinct copies of {CHAIR.name}, warm-up {args.warmup:.0f} s")
    print("CPU s/job: the daemon's and host processes' CPU seconds in the timed window, per job")
    pictures = distinct_chairs(Path(tempfile.mkdtemp(prefix="bench_chairs_")), args.pictures)
    workers = [int(value) for value in args.host_workers.split(",")]
    runs = [(f"host_workers = {n}", {"host_workers": n}) for n in workers]
    runs += [] if args.skip_ray else ray_runs()
    if not args.skip_real:
        print_table("bench_chair (device part on this CPU)",
                    [(label, in_child(pictures, overrides, None, args.warmup)) for label, overrides in runs])
    for seconds in ([] if args.skip_simulated else [float(v) for v in args.device_seconds.split(",")]):
        print_table(f"simulated GPU: the device part is a stand-in that waits {seconds:.1f} s "
                    "without using the CPU; host parts are real",
                    [(label, in_child(pictures, overrides, seconds, args.warmup)) for label, overrides in runs
                     if "executor" not in overrides])
    print("\nafter: load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg()))


if __name__ == "__main__":
    main()
