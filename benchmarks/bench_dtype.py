"""float32 against dtype "auto" (bfloat16 on a CPU with native bfloat16) on the CPU, in one run.

Prints, for each dtype: the load, the first and a warm encode of the full-size official
architecture (random weights, benchmarks/bench_triposr.py, saved as a model folder and evicted
from the page cache before each child loads it), the occupancy (density > mc_threshold at 128^3)
IoU against float32 on that model and on bench_chair + chair.png, and the peak RSS (VmHWM) of
a full-size job on chair.png: in a child that builds the pipeline as the daemon's worker
does, and in a child running `reconctl process`. Random weights give a noise field, so in both
the full-size forward pass hands on bench_chair's object (bench_pipeline.chair_after_the_forward)
and the later stages cost what a real object costs. Each child prints where its memory is.
The full-size encode takes ~20 s in float32 here: the whole run takes a few minutes.

    python benchmarks/bench_dtype.py [--threads N] [--model-folder FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_pipeline  # noqa: E402  (the full-size model folder, the chair job, page-cache eviction)
import bench_triposr  # noqa: E402

from recond.config import (  # noqa: E402
    JobSettings,
    load_settings,
    native_bf16_flags,  # noqa: E402
)
from recond.pipeline.runner import Pipeline  # noqa: E402
from recond.pipeline.warm import build_pipeline  # noqa: E402
from recond.triposr.model import TripoSR  # noqa: E402
from recond.triposr.preprocess import prepare_image  # noqa: E402

DTYPES = ("float32", "auto")
OCCUPANCY_RESOLUTION = 128
LEVEL = JobSettings().mc_threshold


def gib(kib: float) -> float:
    return kib / 2 ** 20


def rss_now() -> str:
    """Resident memory now, split as the kernel counts it (anonymous: our own; files: mapped)."""
    status = dict(re.findall(r"^(\w+):\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M))
    return (f"RSS {gib(int(status['VmRSS'])):.2f} GiB (anonymous {gib(int(status['RssAnon'])):.2f}, "
            f"files {gib(int(status['RssFile'])):.2f}), peak {bench_pipeline.peak_rss_gib():.2f} GiB")


def occupancy(model: TripoSR, scene_code: torch.Tensor) -> np.ndarray:
    return model.density_grid(scene_code, OCCUPANCY_RESOLUTION, level=LEVEL).numpy() > LEVEL


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def daemon_child(folder: Path, dtype: str, scratch: Path) -> None:
    """A fresh process working as the daemon's worker does: build the pipeline
    (worker.build_pipeline), encode twice, the occupancy, then one job published as the worker
    publishes it; each step prints where the memory is."""
    settings = bench_pipeline.settings_for(str(folder), scratch).model_copy(update={"dtype": dtype})
    facts: dict[str, object] = {"dtype": str(settings.resolved_dtype())}
    print(f"  [{dtype}, as the daemon] after imports (torch, recond): {rss_now()}")
    started = time.perf_counter()
    pipeline = build_pipeline(settings)
    assert isinstance(pipeline, Pipeline)
    facts["load"] = time.perf_counter() - started
    model = pipeline.model
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    print(f"  [{dtype}, as the daemon] pipeline built in {facts['load']:.1f} s (background "
          f"{pipeline.background_method}), weights {weights / 2 ** 30:.2f} GiB: {rss_now()}")
    prepared = prepare_image(bench_triposr.picture())
    for label in ("first", "warm"):
        started, cpu_started = time.perf_counter(), time.process_time()
        scene_code = model.encode([prepared])[0]
        facts[label] = time.perf_counter() - started
        facts[f"{label}_cpu"] = time.process_time() - cpu_started
        print(f"  [{dtype}, as the daemon] {label} encode {facts[label]:.1f} s, CPU {facts[f'{label}_cpu']:.1f} s "
              f"({bench_pipeline.load_average()}): {rss_now()}")
    np.save(scratch / f"occupancy_{dtype}.npy", occupancy(model, scene_code))
    pipeline.model = bench_pipeline.chair_after_the_forward(model, settings)
    result = bench_pipeline.run_job(pipeline, settings, scratch, f"job_{dtype}")
    facts["job_peak_gib"] = bench_pipeline.peak_rss_gib()
    print(f"  [{dtype}, as the daemon] job on chair.png: {result.record['faces']} faces, stages "
          + ", ".join(f"{k} {v:.1f}" for k, v in result.stage_seconds.items()) + f": {rss_now()}")
    (scratch / f"facts_{dtype}.json").write_text(json.dumps(facts))


def process_child(folder: Path, dtype: str, scratch: Path) -> None:
    """A fresh process running `reconctl process chair.png --model FOLDER` (its click command),
    the pipeline it builds handing on bench_chair's object after the full-size forward."""
    import recond.worker
    from recond.cli import cli

    def build_with_chair(settings, *args, **kwargs):  # type: ignore[no-untyped-def]
        pipeline = build_pipeline(settings, *args, **kwargs)
        pipeline.model = bench_pipeline.chair_after_the_forward(pipeline.model, settings)
        return pipeline

    recond.worker.build_pipeline = build_with_chair  # what `process` imports when it runs
    os.environ.update({"RECOND_DTYPE": dtype, "RECOND_DEVICE": "cpu",
                       "RECOND_STATE_DIR": str(scratch / "state")})
    try:
        cli.main(["process", str(bench_pipeline.CHAIR), "--model", str(folder),
                  "--out", str(scratch / f"process_{dtype}")], standalone_mode=False)
    except SystemExit as exit_code:
        assert exit_code.code == 0, "reconctl process failed"
    print(f"  [{dtype}, reconctl process] chair.png done: {rss_now()}")
    (scratch / f"process_{dtype}.json").write_text(json.dumps({"peak_gib": bench_pipeline.peak_rss_gib()}))


def bench_chair_iou() -> float:
    grids = {}
    with Image.open(bench_pipeline.CHAIR) as picture:
        prepared = prepare_image(picture)
    for dtype in DTYPES:
        name = load_settings(device="cpu", dtype=dtype).resolved_dtype().name
        model = TripoSR.from_pretrained(bench_pipeline.BENCH_CHAIR, dtype=getattr(torch, name))
        grids[dtype] = occupancy(model, model.encode([prepared])[0])
    return iou(grids["float32"], grids["auto"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--model-folder", type=Path,
                        help="a full-size model folder this script built before (saves ~3 min)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)  # mode, folder, dtype, scratch
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        mode, folder, dtype, scratch = args.child
        (daemon_child if mode == "daemon" else process_child)(Path(folder), dtype, Path(scratch))
        return
    bench_pipeline.print_machine("machine")
    print(f"CPU bfloat16 flags: {native_bf16_flags() or 'none'}; dtype auto resolves to "
          f"{load_settings(device='cpu').resolved_dtype()}")
    print(f"bench_chair + chair.png occupancy IoU (auto vs float32, {OCCUPANCY_RESOLUTION}^3): "
          f"{bench_chair_iou():.4f}")
    with tempfile.TemporaryDirectory(prefix="bench_dtype_") as scratch_name:
        scratch = Path(scratch_name)
        folder = args.model_folder or scratch / "full_size_model"
        if not args.model_folder:
            started = time.perf_counter()
            bench_pipeline.save_full_size_model(folder)
            print(f"full-size model folder built and saved in {time.perf_counter() - started:.1f} s")
        for dtype in DTYPES:
            for mode in ("daemon", "process"):
                bench_pipeline.evict_from_page_cache(folder / "model.ckpt")
                subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                                "--child", mode, str(folder), dtype, str(scratch)], check=True)
        facts = {dtype: json.loads((scratch / f"facts_{dtype}.json").read_text()) for dtype in DTYPES}
        process_peaks = {dtype: json.loads((scratch / f"process_{dtype}.json").read_text())["peak_gib"]
                         for dtype in DTYPES}
        grids = {dtype: np.load(scratch / f"occupancy_{dtype}.npy") for dtype in DTYPES}
        wall, cpu = facts["float32"]["warm"], facts["float32"]["warm_cpu"]
        print(f"\n{'dtype':<33}{'load s':>7}{'first s':>8}{'warm s':>7}{'/f32':>6}{'first CPU s':>12}"
              f"{'warm CPU s':>11}{'/f32':>6}{'IoU':>7}{'job peak GiB':>13}{'process peak GiB':>17}")
        for dtype in DTYPES:
            row = facts[dtype]
            print(f"{row['dtype']:<33}{row['load']:7.1f}{row['first']:8.1f}{row['warm']:7.1f}"
                  f"{row['warm'] / wall:6.2f}{row['first_cpu']:12.1f}{row['warm_cpu']:11.1f}"
                  f"{row['warm_cpu'] / cpu:6.2f}{iou(grids['float32'], grids[dtype]):7.3f}"
                  f"{row['job_peak_gib']:13.2f}{process_peaks[dtype]:17.2f}")
        print("(CPU s: the process's CPU time, steadier than wall time on a shared machine; load: the "
              "pipeline built as the daemon builds it; IoU: occupancy at "
              f"{OCCUPANCY_RESOLUTION}^3 of the full-size random model's warm scene code; job peak: "
              "load, encodes and the chair job in the daemon's way; process peak: reconctl process "
              "chair.png; default job settings)")
    bench_pipeline.print_machine("machine at the end")


if __name__ == "__main__":
    main()
