"""Seconds per pipeline stage for one example picture at default settings, on CPU.

The weights are the tests' tiny random checkpoint (recond/triposr/tiny.py builds it; the real
1.7 GB weights cannot be downloaded here), so the model-bound parts of reconstruct (encode,
density queries) and texture (colour queries) are far cheaper than with the real network.
Every other stage (loading, background, marching cubes, UV unwrap, export, turntable, viewer)
does the same work as in production. Prints the machine, the settings and
JobResult.stage_seconds. Then, unless --skip-full-size, the pipeline's reconstruct stage (encode +
density grid + marching cubes) runs on the full-size official architecture with random weights,
built by benchmarks/bench_triposr.py, at --full-size-resolution.

    python benchmarks/bench_pipeline.py [--example chair.png] [--threads N] [--runs 1]
                                        [--full-size-resolution 256] [--skip-full-size]
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
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_triposr  # noqa: E402  (A's full-size random-weight model, so both benches time the same network)

from recond.config import JobSettings, Settings, load_settings, part_of  # noqa: E402
from recond.pipeline.runner import Pipeline  # noqa: E402
from recond.pipeline.reconstruct import reconstruct  # noqa: E402
from recond.triposr.preprocess import prepare_image  # noqa: E402
from recond.triposr.tiny import build_tiny_checkpoint  # noqa: E402  (the tests' tiny checkpoint)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default="chair.png", help="a picture in ../shared/examples")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--runs", type=int, default=1, help="runs on the same warm pipeline")
    parser.add_argument("--full-size-resolution", type=int, default=256,
                        help="marching-cubes resolution for the full-size reconstruct stage")
    parser.add_argument("--skip-full-size", action="store_true", help="only the tiny-checkpoint run")
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
        print(f"example: {source.name}; model: tiny random checkpoint (recond/triposr/tiny.py)")
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
            result = pipeline.run(source, scratch_dir / "outbox", f"run_{run}",
                                  part_of(settings, JobSettings))
            total = time.perf_counter() - started
            print(f"run {run + 1}: {total:.2f} s total, {result.record['vertices']} vertices, "
                  f"{result.record['faces']} faces, background {result.record['background']}")
            for stage, seconds in result.stage_seconds.items():
                print(f"  {stage:<12}{seconds:8.2f} s  {100 * seconds / total:5.1f} %")
            for warning in result.warnings:
                print(f"  warning: {warning}")
        print(f"peak RSS: {peak_rss_gib():.2f} GiB")
        if not args.skip_full_size:
            bench_full_size_reconstruct(settings, args.full_size_resolution)


def bench_full_size_reconstruct(settings: Settings, resolution: int) -> None:
    """The reconstruct stage as Pipeline.run calls it, with the full-size network."""
    started = time.perf_counter()
    model = bench_triposr.random_official_model(seed=0)
    print(f"full-size architecture (random weights): built in {time.perf_counter() - started:.1f} s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
    prepared = prepare_image(bench_triposr.picture(), settings.foreground_ratio)
    bench_triposr.place_surface(model, model.encode([prepared])[0], settings.mc_threshold)
    marks: list[tuple[float, float]] = []
    full_settings = settings.model_copy(update={"mc_resolution": resolution})
    started = time.perf_counter()
    _, mesh = reconstruct(model, prepared, full_settings,
                          lambda fraction: marks.append((fraction, time.perf_counter())))
    finished = time.perf_counter()
    encoded = next(t for f, t in marks if f >= 0.35)  # reconstruct reports 0.35 after encode
    print(f"full-size reconstruct at {resolution}^3: {finished - started:.1f} s total (encode "
          f"{encoded - started:.1f} s, density grid + marching cubes {finished - encoded:.1f} s), "
          f"{len(mesh.vertices)} vertices, {len(mesh.faces)} faces, peak RSS {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
