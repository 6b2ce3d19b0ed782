"""Seconds per pipeline stage for bench_chair at default settings, plus the full-size forward pass.

Part 1 runs a warm Pipeline on ``../shared/reference/bench_chair`` (tiny encoder, but the official
triplane and decoder fitted to a chair for ``examples/chair.png``; see its README), so everything
after the forward pass costs what it costs with the real model on a real object. It prints one
table of stage seconds, the mesh and result-folder figures from job.json, and sizes.

Part 2 (unless --skip-full-size) saves the full-size official architecture with random weights
(benchmarks/bench_triposr.py builds it) as a model folder, evicts it from the page cache and,
in a fresh process, loads it as the daemon does and times the load, the first encode and a
warm encode; with --full-size-job it also runs two jobs on chair.png through that model (its
forward pass, then bench_chair's object: see chair_after_the_forward) and prints the process's
peak RSS.

The machine is shared: the load average is printed before and after; compare ratios of one run.

    python benchmarks/bench_pipeline.py [--threads N] [--runs 1] [--skip-full-size] [--full-size-job]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BENCH_CHAIR = SHARED / "reference" / "bench_chair"
CHAIR = SHARED / "examples" / "chair.png"

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_triposr  # noqa: E402  (the full-size random-weight model, shared with bench_triposr)

from recond.config import JobSettings, Settings, load_settings, part_of  # noqa: E402
from recond.inbox.dropped import read_source  # noqa: E402
from recond.outbox import publish  # noqa: E402
from recond.pipeline.contract import JobResult  # noqa: E402
from recond.pipeline.runner import Pipeline  # noqa: E402
from recond.triposr.config import OFFICIAL_CONFIG_PATH  # noqa: E402
from recond.triposr.model import TripoSR  # noqa: E402
from recond.triposr.preprocess import prepare_image  # noqa: E402


def peak_rss_gib() -> float:
    """This process's peak RSS since it started (VmHWM). Not ru_maxrss: a child started by
    subprocess inherits its parent's at the fork, so a child of a parent that built the
    full-size model reported the parent's 2.3 GiB before loading anything."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 2 ** 20  # kB


def load_average() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def print_machine(label: str) -> None:
    print(f"{label}: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, {load_average()}")


def settings_for(model: str, scratch: Path) -> Settings:
    return load_settings(model=model, device="cpu", state_dir=scratch / "state",
                         inbox=scratch / "inbox", outbox=scratch / "outbox")


def print_settings(settings: Settings) -> None:
    print(f"settings: device cpu, dtype {settings.resolved_dtype()}, background {settings.background}, "
          + ", ".join(f"{key} {value}" for key, value in part_of(settings, JobSettings).model_dump().items()))


def bench_chair(runs: int, scratch: Path) -> None:
    settings = settings_for(str(BENCH_CHAIR), scratch)
    print(f"\n== bench_chair job ({CHAIR.name}, model {BENCH_CHAIR.name}) ==")
    print_settings(settings)
    started = time.perf_counter()
    pipeline = Pipeline(settings)
    print(f"build (model + background remover): {time.perf_counter() - started:.2f} s")
    for run in range(runs):
        started = time.perf_counter()
        result = run_job(pipeline, settings, scratch, f"run_{run}")
        total = time.perf_counter() - started
        print(f"run {run + 1} ({load_average()}):")
        print(f"  {'stage':<12}{'seconds':>8}  {'share':>6}")
        for stage, seconds in result.stage_seconds.items():
            print(f"  {stage:<12}{seconds:8.2f}  {100 * seconds / total:5.1f} %")
        print(f"  {'total':<12}{total:8.2f}")
        for key in ("mesh", "texture", "grid"):
            if key in result.record:
                print(f"  {key}: {json.dumps(result.record[key])}")
        print(f"  vertices {result.record['vertices']}, faces {result.record['faces']}")
        sizes = {p.name: p.stat().st_size for p in result.result_dir.iterdir() if p.is_file()}
        big = sorted(sizes.items(), key=lambda item: -item[1])[:6]
        print(f"  result folder {sum(sizes.values()) / 2 ** 20:.1f} MB: "
              + ", ".join(f"{name} {size / 2 ** 20:.2f} MB" for name, size in big))
    print(f"peak RSS: {peak_rss_gib():.2f} GiB")


def run_job(pipeline: Pipeline, settings: Settings, scratch: Path, name: str) -> JobResult:
    """chair.png through the pipeline into a published result folder, as the worker does it."""
    result, folder = publish.build_result(
        scratch / "outbox", name, "bench",
        lambda staging: pipeline.run(read_source(CHAIR, settings.max_file_bytes), staging,
                                     part_of(settings, JobSettings)))
    result.result_dir = folder
    return result


def save_full_size_model(folder: Path) -> None:
    """The official architecture with random weights, as a model folder the loader reads."""
    model = bench_triposr.random_official_model(seed=0)
    prepared = prepare_image(bench_triposr.picture())
    bench_triposr.place_surface(model, model.encode([prepared])[0], 25.0)
    folder.mkdir(parents=True)
    shutil.copy(OFFICIAL_CONFIG_PATH, folder / "config.yaml")
    torch.save(model.state_dict(), folder / "model.ckpt")


def evict_from_page_cache(path: Path) -> None:
    """Drop this one file's cached pages, so the child loads it from disk as after a reboot."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def full_size_child(folder: Path, job: bool, scratch: Path) -> None:
    """Run in a fresh process, with the checkpoint evicted from the page cache."""
    print_machine("full-size process")
    settings = settings_for(str(folder), scratch)
    print_settings(settings)
    started = time.perf_counter()
    model = TripoSR.from_pretrained(folder, dtype=getattr(torch, settings.resolved_dtype().name))
    print(f"  load (from_pretrained): {time.perf_counter() - started:.1f} s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
          f"peak RSS {peak_rss_gib():.2f} GiB")
    prepared = prepare_image(bench_triposr.picture())
    for label in ("first encode after load", "warm encode"):
        started = time.perf_counter()
        model.encode([prepared])
        print(f"  {label}: {time.perf_counter() - started:.1f} s ({load_average()})")
    print(f"  peak RSS after encodes: {peak_rss_gib():.2f} GiB")
    if job:
        pipeline = Pipeline(settings, model=chair_after_the_forward(model, settings))
        for label in ("first job", "warm job"):
            started = time.perf_counter()
            result = run_job(pipeline, settings, scratch, label.replace(" ", "_"))
            print(f"  {label} on {CHAIR.name}: {time.perf_counter() - started:.1f} s, "
                  f"faces {result.record['faces']}, stages "
                  + ", ".join(f"{k} {v:.1f}" for k, v in result.stage_seconds.items()))
        print(f"  peak RSS of the process (load, encodes, jobs): {peak_rss_gib():.2f} GiB")


def chair_after_the_forward(model: TripoSR, settings: Settings) -> TripoSR:
    """The full-size model, made to hand on bench_chair's object after its own forward pass.

    Random weights give a noise field, whose mesh says nothing about a real job. bench_chair's
    decoder has the official shape: the full-size model takes it over, and its encode runs the
    full-size forward pass (time and memory as in production) but returns bench_chair's scene
    code for chair.png, so every later stage sees a realistic object.
    """
    from PIL import Image

    chair = TripoSR.from_pretrained(BENCH_CHAIR)
    with Image.open(CHAIR) as picture:
        chair_code = chair.encode([prepare_image(picture, settings.foreground_ratio)])
    model.decoder.load_state_dict(chair.decoder.state_dict())
    forward = model.encode

    def encode(images, progress=None):  # type: ignore[no-untyped-def]
        forward(images, progress)
        return chair_code.clone()

    model.encode = encode  # type: ignore[method-assign]
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--runs", type=int, default=1, help="runs on the same warm pipeline")
    parser.add_argument("--skip-full-size", action="store_true", help="only the bench_chair job")
    parser.add_argument("--full-size-job", action="store_true",
                        help="also run one warm job through the full-size model and report peak RSS")
    parser.add_argument("--full-size-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as scratch:
        scratch_dir = Path(scratch)
        if args.full_size_child:
            full_size_child(args.full_size_child, args.full_size_job, scratch_dir)
            return
        print_machine("machine")
        bench_chair(args.runs, scratch_dir)
        if args.skip_full_size:
            return
        print("\n== full-size architecture, random weights (forward pass) ==")
        started = time.perf_counter()
        folder = scratch_dir / "full_size_model"
        save_full_size_model(folder)
        print(f"built and saved in {time.perf_counter() - started:.1f} s")
        evict_from_page_cache(folder / "model.ckpt")
        command = [sys.executable, __file__, "--threads", str(args.threads),
                   "--full-size-child", str(folder)] + (["--full-size-job"] if args.full_size_job else [])
        subprocess.run(command, check=True)
        print_machine("machine at the end")


if __name__ == "__main__":
    main()
