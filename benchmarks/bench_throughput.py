"""Jobs per minute with host processes beside the warm model (issue 14): host_workers 0, 1, 2.

Eight distinct pictures (``examples/chair.png`` with one transparent corner pixel changed in
each, so the bytes differ while the object stays: bench_chair's decoder gives a chair only for
chair.png's scene code) go through the real worker (recond/worker.py) with bench_chair at
default settings, in a fresh process per run. Each run waits until the model is loaded and the
host processes had ``--warmup`` seconds to import, queues the pictures, and times them from the
queue to the last published result. It prints wall time, jobs per minute, the speed-up over
host_workers = 0 and the peak RSS of the daemon process and of each host process.

Then the same with a *simulated GPU*: the device part replaced by a stand-in that waits a fixed
``--device-seconds`` (1.0) without using the CPU, as a GPU leaves the CPU free, and hands on
bench_chair's real hand-off for chair.png (with each picture's own bytes). Throughput then
follows max(device, host / workers) instead of device + host.

The Ray row (executor = "ray", 2 device actors) runs on a private Ray started inside the run
(ray_address = "local": all CPUs of this machine); its start-up is not timed, its device
actors' peak RSS is printed beside the daemon's. It has no simulated-GPU row: the actors build
their own pipelines.

The machine is shared: the load average is printed before and after; compare ratios of one run.

    python benchmarks/bench_throughput.py [--pictures 8] [--host-workers 0,1,2] [--skip-simulated]
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
DEVICE_SECONDS = 1.0

from recond.config import JobSettings, ModelSettings, load_settings  # noqa: E402
from recond.inbox.dropped import read_source  # noqa: E402
from recond.pipeline.contract import SourcePicture  # noqa: E402
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
    """A warm pipeline whose device part takes ``seconds`` of waiting and no CPU, handing on
    bench_chair's real hand-off of chair.png; the host part is the real one."""

    host_part = staticmethod(run_host_part)

    def __init__(self, settings: ModelSettings, seconds: float) -> None:
        real = Pipeline(settings)
        self.model_id, self.device, self.background_method = real.model_id, "simulated GPU", real.background_method
        self.seconds = seconds
        self.template = real.device_part(read_source(CHAIR, JobSettings().max_file_bytes), JobSettings())

    def device_part(self, source: SourcePicture, job: JobSettings, report: Any = None) -> Any:
        time.sleep(self.seconds)
        return dataclasses.replace(self.template, source_name=source.name, source_folder=source.folder,
                                   source_bytes=source.data, sha256=sha256_of_bytes(source.data))


def peak_rss_mib(pid: int) -> float | None:
    """A live process's peak resident memory (VmHWM), MiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return None


def run_once(pictures: list[Path], overrides: dict[str, Any], simulated: bool, warmup: float) -> dict[str, Any]:
    """One configuration, in this process: the worker on a fresh state dir, the pictures queued
    at once once it is warm; wall seconds and peak RSS figures."""
    scratch = Path(tempfile.mkdtemp(prefix="bench_throughput_"))
    settings = load_settings(model=str(BENCH_CHAIR), device="cpu", inbox=scratch / "inbox",
                             outbox=scratch / "outbox", state_dir=scratch / "state", **overrides)
    for folder in (settings.inbox, settings.outbox):
        folder.mkdir(parents=True)
    store = Store(settings.db_path)
    store.daemon_started(os.getpid())
    factory = (lambda model: SimulatedGpu(model, DEVICE_SECONDS)) if simulated else build_pipeline
    worker = Worker(settings, store, pipeline_factory=factory)
    worker.start()
    try:
        wait_until(lambda: (store.daemon_state() or {}).get("model_status") == "ready", 600)
        time.sleep(warmup)  # host processes import torch, trimesh and xatlas meanwhile
        for picture in pictures:
            data = picture.read_bytes()
            (settings.inbox / picture.name).write_bytes(data)
            store.enqueue(picture.name, sha256_of_bytes(data), len(data), picture.stem)
        started = time.monotonic()
        worker.wake()
        wait_until(lambda: store.counts()[DONE] + store.counts()[FAILED] == len(pictures), 3600)
        wall = time.monotonic() - started
        executor = worker.executor
        workers = executor.workers() if executor else []
        host_rss = [peak_rss_mib(info.pid) for info in workers if info.kind == "host" and info.pid]
        device_rss = [peak_rss_mib(info.pid) for info in workers
                      if info.kind == "device" and info.pid not in (None, os.getpid())]
    finally:
        worker.stop()
    return {"jobs": store.counts()[DONE], "failed": store.counts()[FAILED], "wall_s": wall,
            "daemon_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "host_peak_rss_mib": host_rss, "device_peak_rss_mib": device_rss,
            "jobs_at_once": executor.capacity if executor else None}


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


def in_child(pictures: list[Path], overrides: dict[str, Any], simulated: bool, warmup: float) -> dict[str, Any]:
    """run_once in a fresh process, so each run's peak RSS is its own."""
    command = [sys.executable, __file__, "--run-once", json.dumps(
        {"pictures": [str(p) for p in pictures], "overrides": overrides, "simulated": simulated, "warmup": warmup})]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def print_table(title: str, rows: list[tuple[str, dict[str, Any]]]) -> None:
    print(f"\n== {title} ==")
    print(f"{'run':<22}{'jobs':>5}{'wall s':>9}{'jobs/min':>10}{'speed-up':>10}{'daemon MiB':>12}  host MiB (each)")
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
              f"{per_minute / baseline:>9.2f}x{result['daemon_peak_rss_mib']:>12.0f}  {hosts}"
              + (f"; device actors MiB (each): {devices}" if devices else "")
              + (f"  ({result['failed']} failed)" if result["failed"] else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=8)
    parser.add_argument("--host-workers", default="0,1,2", help="comma-separated host_workers values")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds for host processes to start")
    parser.add_argument("--skip-simulated", action="store_true")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--run-once", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_once:
        job = json.loads(args.run_once)
        print(json.dumps(run_once([Path(p) for p in job["pictures"]], job["overrides"], job["simulated"],
                                  job["warmup"])))
        return

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, load average "
          + ", ".join(f"{value:.2f}" for value in os.getloadavg()))
    print(f"model {BENCH_CHAIR.name}, default settings (mc_resolution {JobSettings().mc_resolution}, "
          f"texture {JobSettings().texture_resolution}, {JobSettings().render_views} views), "
          f"{args.pictures} distinct copies of {CHAIR.name}, warm-up {args.warmup:.0f} s")
    pictures = distinct_chairs(Path(tempfile.mkdtemp(prefix="bench_chairs_")), args.pictures)
    workers = [int(value) for value in args.host_workers.split(",")]
    runs = [(f"host_workers = {n}", {"host_workers": n}) for n in workers]
    runs += [] if args.skip_ray else ray_runs()
    print_table("bench_chair (device part on this CPU)",
                [(label, in_child(pictures, overrides, False, args.warmup)) for label, overrides in runs])
    if not args.skip_simulated:
        print_table(f"simulated GPU: the device part is a stand-in that waits {DEVICE_SECONDS:.1f} s "
                    "without using the CPU; host parts are real",
                    [(label, in_child(pictures, overrides, True, args.warmup)) for label, overrides in runs
                     if "executor" not in overrides])
    print("\nafter: load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg()))


if __name__ == "__main__":
    main()
