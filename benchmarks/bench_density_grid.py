"""The density grid on bench_chair: decoder chunk sizes, and the coarse-to-fine grid against the full one.

1. Seconds (wall and process CPU) to query the same grid points with each chunk size, which is
   how the default chunk_size was chosen.
2. The full grid and the refined grid (recond/triposr/isosurface.py) at --resolution: seconds,
   points evaluated, and the distance between their marching-cubes surfaces (Hausdorff, both
   ways), for the whole surface and for the kept object (after the mesh stage drops floaters).

The machine is shared: the load average is printed with every figure; a busy machine slows
two-thread runs of small chunks most (threads wait on each other), so compare on a quiet one.

    python benchmarks/bench_density_grid.py [--resolution 256] [--chunks 4096,8192,16384,65536]
                                            [--sample-points 1000000] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.spatial import cKDTree

from recond.config import Settings
from recond.pipeline.mesh import drop_floaters, surface
from recond.triposr.model import TripoSR
from recond.triposr.preprocess import prepare_image
from recond.triposr.isosurface import grid_point_chunks

SHARED = Path(__file__).resolve().parents[2] / "shared"
LEVEL = 25.0


def load_average() -> str:
    return "load " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def timed(work) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def hausdorff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    return float(cKDTree(b).query(a)[0].max()), float(cKDTree(a).query(b)[0].max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--chunks", default="4096,8192,16384,65536")
    parser.add_argument("--sample-points", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = TripoSR.from_pretrained(SHARED / "reference" / "bench_chair")
    with Image.open(SHARED / "examples" / "chair.png") as picture:
        scene_code = model.encode([prepare_image(picture)])[0]
    print(f"bench_chair, threads {torch.get_num_threads()}, {os.cpu_count()} cpus, {load_average()}")

    points = next(grid_point_chunks(args.resolution, model.radius, args.resolution ** 3))
    sample = points[torch.randperm(len(points), generator=torch.Generator().manual_seed(0))[:args.sample_points]]
    model.query(scene_code, sample[:65536])  # first-call set-up out of the figures
    for chunk in (int(text) for text in args.chunks.split(",")):
        _, wall, cpu = timed(lambda: model.query(scene_code, sample, chunk))
        print(f"chunk {chunk:>7}: {len(sample):,} points in {wall:.2f} s wall, {cpu:.2f} s CPU "
              f"({1e6 * wall / len(sample):.2f} us/point; {load_average()})")

    chunk = Settings.model_fields["chunk_size"].default
    full, full_wall, full_cpu = timed(lambda: model.density_grid(scene_code, args.resolution, chunk))
    print(f"full grid {args.resolution}^3 (chunk {chunk}): {full_wall:.1f} s wall, {full_cpu:.1f} s CPU, "
          f"{args.resolution ** 3:,} points ({load_average()})")
    counted = [0]
    query = model.field.query

    def counting_query(code: torch.Tensor, at: torch.Tensor, size: int) -> dict[str, torch.Tensor]:
        counted[0] += len(at)
        return query(code, at, size)

    model.field.query = counting_query  # type: ignore[method-assign]
    refined, wall, cpu = timed(lambda: model.density_grid(scene_code, args.resolution, chunk, level=LEVEL))
    print(f"refined grid {args.resolution}^3: {wall:.1f} s wall, {cpu:.1f} s CPU, {counted[0]:,} points "
          f"({counted[0] / args.resolution ** 3:.1%}); {full_wall / wall:.1f}x faster ({load_average()})")

    whole = surface(full, LEVEL, model.radius), surface(refined, LEVEL, model.radius)
    kept = drop_floaters(whole[0], 0.02)[0], drop_floaters(whole[1], 0.02)[0]
    voxel = 2 * model.radius / (args.resolution - 1)
    for label, (ours, theirs) in (("whole surface", whole[::-1]), ("kept object", kept[::-1])):
        to_full, from_full = hausdorff(ours.vertices, theirs.vertices)
        print(f"{label}: faces {len(ours.faces):,} refined vs {len(theirs.faces):,} full; Hausdorff "
              f"refined->full {to_full:.2g}, full->refined {from_full:.2g} ({from_full / voxel:.1f} voxels)")


if __name__ == "__main__":
    main()
