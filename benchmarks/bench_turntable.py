"""Figures for the rendering half of the pipeline: rasteriser, texture bake, turntable, viewer.

The headline is the turntable (30 views at 256 px of a ~100k-face textured mesh on CPU);
upstream TripoSR volume-renders its turntable and spends about four minutes there.
Meshes are marching-cubes surfaces of a bumpy blob, like TripoSR's output.

    python benchmarks/bench_turntable.py [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import mcubes
import numpy as np
import torch
import trimesh

from recond.pipeline.raster import rasterize
from recond.pipeline.texture import bake_texture
from recond.pipeline.turntable import render_turntable, write_turntable
from recond.pipeline.viewer import write_viewer


def bumpy_blob(grid: int) -> trimesh.Trimesh:
    """A closed marching-cubes surface; face count grows with grid**2 (~3.7 * grid**2)."""
    axis = np.linspace(-1, 1, grid)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    field = 0.6 + 0.15 * np.sin(5 * x) * np.sin(4 * y) * np.sin(3 * z) - np.sqrt(x**2 + y**2 + z**2)
    vertices, faces = mcubes.marching_cubes(field, 0.0)
    return trimesh.Trimesh(vertices / (grid - 1) * 2 - 1, faces, process=False)


def color_field(points: np.ndarray) -> np.ndarray:
    return (0.5 + 0.5 * np.sin(4 * points)).astype(np.float32)


def timed(label: str, function, repeats: int = 1, warm_up: bool = True):
    if warm_up:  # first calls pay for allocator and kernel set-up
        function()
    start = time.perf_counter()
    for _ in range(repeats):
        result = function()
    print(f"{label}: {(time.perf_counter() - start) / repeats:.3f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")

    blob_100k = bumpy_blob(164)
    print(f"\nmesh A: {len(blob_100k.faces):,} faces")
    sphere = torch.from_numpy(blob_100k.vertices.astype(np.float32)).to(args.device)
    screen = torch.stack([(0.5 + 0.45 * sphere[:, 0]) * 256, (0.5 - 0.45 * sphere[:, 1]) * 256, -sphere[:, 2]], -1)
    faces = torch.from_numpy(blob_100k.faces).to(args.device)
    timed("rasterise mesh A at 256x256 (one view)", lambda: rasterize(screen, faces, 256, 256), repeats=10)
    timed("rasterise mesh A at 512x512 (one view)", lambda: rasterize(screen * 2, faces, 512, 512), repeats=5)

    textured_100k = timed("bake_texture mesh A at 1024", lambda: bake_texture(blob_100k, color_field, 1024),
                          warm_up=False)
    frames = timed(
        "turntable: 30 views at 256 px of textured mesh A (2x supersampled)",
        lambda: render_turntable(textured_100k, 30, 256, device=args.device),
    )
    with tempfile.TemporaryDirectory() as folder:
        timed("write 30 PNGs + render.mp4", lambda: write_turntable(frames, Path(folder), fps=30))

    blob_50k = bumpy_blob(116)
    print(f"\nmesh B: {len(blob_50k.faces):,} faces")
    textured_50k = timed("bake_texture mesh B at 1024 (xatlas + raster + query + fill)",
                         lambda: bake_texture(blob_50k, color_field, 1024), warm_up=False)
    with tempfile.TemporaryDirectory() as folder:
        page = timed("write_viewer mesh B", lambda: write_viewer(Path(folder), textured_50k, [], "bench"))
        print(f"index.html for mesh B ({len(textured_50k.vertices):,} vertices after UV split): "
              f"{page.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
