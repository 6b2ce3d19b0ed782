"""Seconds per pipeline stage for one example picture at default settings, on CPU.

The weights are the tests' tiny random checkpoint (tests/conftest.py builds it; the real
1.7 GB weights cannot be downloaded here), so the model-bound parts of reconstruct (encode,
density queries) and texture (colour queries) are far cheaper than with the real network:
benchmarks/bench_triposr.py times those with the full-size architecture. Every other stage
(loading, background, marching cubes, UV unwrap, export, turntable, viewer) does the same work
as in production. Prints the machine, the settings and JobResult.stage_seconds.

    python benchmarks/bench_pipeline.py [--example chair.png] [--threads N] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO.parent / "shared" / "examples"
sys.path.insert(0, str(REPO / "tests"))

from conftest import build_tiny_checkpoint  # noqa: E402  (the tests' tiny checkpoint builder)

from recond.config import load_settings  # noqa: E402
from recond.pipeline import Pipeline  # noqa: E402


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default="chair.png", help="a picture in ../shared/examples")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--runs", type=int, default=1, help="runs on the same warm pipeline")
    args = parser.parse_args()
    source = EXAMPLES / args.example
    if not source.is_file():
        sys.exit(f"example picture {source} not found")
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as scratch:
        scratch_dir = Path(scratch)
        model_dir = build_tiny_checkpoint(scratch_dir / "tiny_triposr")
        settings = load_settings(model=str(model_dir), device="cpu")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
              f"threads {torch.get_num_threads()}")
        print(f"example: {source.name}; model: tiny random checkpoint (tests/conftest.py)")
        print(f"settings: device {settings.resolved_device()}, dtype {settings.resolved_dtype()}, "
              + ", ".join(f"{key} {getattr(settings, key)}" for key in
                          ("background", "mc_resolution", "mc_threshold", "chunk_size", "bake_texture",
                           "texture_resolution", "render_views", "render_size", "video_fps")))

        started = time.perf_counter()
        pipeline = Pipeline(settings)
        print(f"build (model + background remover): {time.perf_counter() - started:.2f} s, "
              f"background method {pipeline.background_method}")

        for run in range(args.runs):
            started = time.perf_counter()
            result = pipeline.run(source, scratch_dir / "outbox", f"run_{run}")
            total = time.perf_counter() - started
            print(f"run {run + 1}: {total:.2f} s total, {result.record['vertices']} vertices, "
                  f"{result.record['faces']} faces, background {result.record['background']}")
            for stage, seconds in result.stage_seconds.items():
                print(f"  {stage:<12}{seconds:8.2f} s  {100 * seconds / total:5.1f} %")
            for warning in result.warnings:
                print(f"  warning: {warning}")
        print(f"peak RSS: {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
