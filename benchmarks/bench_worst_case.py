"""The worst case at default settings (issue 22): a noisy field from the full-size architecture
with random weights, beside bench_chair's normal job.

The noisy job builds the official TripoSR architecture with random weights as
benchmarks/bench_triposr.py does (its density bias shifted so the threshold cuts ~15 % of the
box), and runs one whole job on chair.png through a warm Pipeline at the default JobSettings
(mc_resolution 256, target_faces 20,000, texture on, 30 turntable frames). The chair job runs
``../shared/reference/bench_chair`` on chair.png the same way. Each job runs in a fresh process
of its own, so its peak RSS is its own. Printed: seconds per stage, faces and bodies before and
after simplification, what the fallback did, the warnings, peak RSS, and the issue's targets
(whole job <= 300 s, host stages <= 60 s, <= 5 % over target_faces).

    nice python benchmarks/bench_worst_case.py [--threads N] [--only noisy|chair] [--noisy-resolution 256]

Before the density grid was bounded (recond/triposr/isosurface.py, MAX_REFINED_SHARE) the noisy
job's grid at 256^3 evaluated every point through the full decoder and ran past 20 minutes on a
shared 2-core machine; it now samples such a field 4x coarser (27.9 s for the whole job here,
docs/bounded-cost.md). --noisy-resolution 128 is the issue's first measured case.
"""

from __future__ import annotations

import argparse
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

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BENCH_CHAIR = SHARED / "reference" / "bench_chair"
CHAIR = SHARED / "examples" / "chair.png"
HOST_STAGES = ("mesh", "texture", "export", "render", "viewer", "record")
JOB_DEFAULT_RESOLUTION = 256  # JobSettings' mc_resolution

sys.path.insert(0, str(REPO / "benchmarks"))


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def run_job(which: str, resolution: int) -> dict[str, Any]:
    """One whole job in this process; its figures as a dict (printed as JSON by the child)."""
    from recond.config import JobSettings, load_settings, part_of
    from recond.pipeline.contract import SourcePicture
    from recond.pipeline.runner import Pipeline
    from recond.pipeline.warm import load_main_thread_libraries

    load_main_thread_libraries()
    with tempfile.TemporaryDirectory() as scratch:
        settings = load_settings(device="cpu", rembg_home=Path(scratch) / "no-rembg",
                                 model=str(BENCH_CHAIR), mc_resolution=resolution)
        started = time.perf_counter()
        if which == "noisy":
            from bench_triposr import place_surface, random_official_model
            from PIL import Image

            from recond.triposr.preprocess import prepare_image

            model = random_official_model(seed=0)
            # chair.png has its alpha: the pipeline frames it the same way (no background removal).
            scene_code = model.encode([prepare_image(Image.open(CHAIR))])[0]
            place_surface(model, scene_code, JobSettings().mc_threshold)
            pipeline = Pipeline(settings, model=model)
        else:
            pipeline = Pipeline(settings)
        build_s = time.perf_counter() - started
        out = Path(scratch) / "result"
        out.mkdir()
        started = time.perf_counter()
        result = pipeline.run(SourcePicture(CHAIR.name, CHAIR.read_bytes()), out, part_of(settings, JobSettings))
        job_s = time.perf_counter() - started
        record = result.record
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"job": which, "build_s": round(build_s, 1), "job_s": round(job_s, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "stage_seconds": result.stage_seconds, "mesh": record["mesh"], "texture": record["texture"],
            "textured": record["textured"], "faces": record["faces"], "warnings": result.warnings,
            "target_faces": JobSettings().target_faces, "mc_resolution": resolution,
            "peak_rss_gib": round(peak_rss_gib(), 2)}


def table(rows: list[dict[str, Any]]) -> None:
    names = [str(row["job"]) for row in rows]
    print(f"{'':34}" + "".join(f"{name:>14}" for name in names))

    def line(label: str, values: list[object]) -> None:
        print(f"{label:34}" + "".join(f"{value!s:>14}" for value in values))

    stages = list(rows[0]["stage_seconds"])
    for stage in stages:
        line(f"{stage} s", [row["stage_seconds"][stage] for row in rows])
    line("host stages (mesh..record) s", [round(sum(row["stage_seconds"][s] for s in HOST_STAGES), 1)
                                          for row in rows])
    line("whole job s", [row["job_s"] for row in rows])
    line("CPU s of the process (build + job)", [row.get("cpu_s") for row in rows])
    line("mc_resolution", [row["mc_resolution"] for row in rows])
    for key in ("grid_resolution", "marching_cubes_faces", "pieces", "pieces_dropped", "faces_after_floaters",
                "handles", "topology_kept", "faces", "bodies", "watertight", "hausdorff"):
        line(f"mesh.{key}", [row["mesh"].get(key) for row in rows])
    line("faces over target_faces", [f"{(int(row['faces']) / int(row['target_faces']) - 1):+.1%}"
                                     for row in rows])
    line("textured (atlas charts)", [f"{row['textured']} ({(row['texture'] or {}).get('charts')})"
                                     for row in rows])
    line("peak RSS GiB", [row["peak_rss_gib"] for row in rows])
    for row in rows:
        print(f"{row['job']}: degraded steps: {row['mesh']['degraded']}")
        for warning in row["warnings"]:
            print(f"{row['job']}: warning: {warning}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--only", choices=("noisy", "chair"))
    parser.add_argument("--noisy-resolution", type=int, default=JOB_DEFAULT_RESOLUTION,
                        help="mc_resolution of the noisy job (the chair job always runs the default)")
    args = parser.parse_args()
    if args.only:
        torch.set_num_threads(args.threads)
        resolution = args.noisy_resolution if args.only == "noisy" else JOB_DEFAULT_RESOLUTION
        print(json.dumps(run_job(args.only, resolution)))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"threads {args.threads}, load average {os.getloadavg()[0]:.1f} before")
    print(f"command: {' '.join(sys.argv)}; settings: JobSettings defaults, device cpu, float32")
    rows = []
    for which in ("chair", "noisy"):
        child = subprocess.run([sys.executable, __file__, "--only", which, "--threads", str(args.threads),
                                "--noisy-resolution", str(args.noisy_resolution)],
                               capture_output=True, text=True, check=True)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    table(rows)
    print(f"load average {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
