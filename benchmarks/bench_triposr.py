"""Time and memory of one reconstruction with the full-size official TripoSR architecture.

Random weights (the real ones cannot be downloaded here): the model is built on the meta
device, materialised with to_empty and initialised in place, and the density output bias is
shifted so the surface threshold cuts ~15% of the box, as a real object would. Prints seconds
and peak RSS after encode, density grid and marching cubes with vertex colours (as upstream's
extract_mesh).

    python benchmarks/bench_triposr.py [--resolution 256] [--chunk-size 8192] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from recond.pipeline.mesh import surface, with_vertex_colors
from recond.pipeline.reconstruct import color_query
from recond.triposr.config import load_config
from recond.triposr.model import TripoSR
from recond.triposr.preprocess import prepare_image
from recond.triposr.config import OFFICIAL_CONFIG_PATH

INSIDE_FRACTION = 0.15


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def random_official_model(seed: int) -> TripoSR:
    with torch.device("meta"):
        model = TripoSR(load_config(OFFICIAL_CONFIG_PATH))
    model.to_empty(device="cpu")
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        embeddings = model.image_tokenizer.model.embeddings
        for parameter in (embeddings.cls_token, embeddings.position_embeddings, model.tokenizer.embeddings):
            parameter.normal_(0.0, 0.5)
    return model.eval()


def picture() -> Image.Image:
    image = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((100, 80, 412, 440), fill=(190, 90, 50, 255))
    return image


def place_surface(model: TripoSR, scene_code: torch.Tensor, threshold: float) -> None:
    """Shift the density bias so `threshold` sits at the (1 - INSIDE_FRACTION) quantile."""
    grid = model.density_grid(scene_code, 32)
    level = float(np.quantile(np.log(grid.numpy().astype(np.float64)), 1 - INSIDE_FRACTION))
    with torch.no_grad():
        model.decoder.layers[-1].bias[0] += math.log(threshold) - level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=8192)
    parser.add_argument("--threshold", type=float, default=25.0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"settings: device cpu, dtype float32, official config, resolution {args.resolution}, "
          f"chunk_size {args.chunk_size}, threshold {args.threshold}")

    started = time.perf_counter()
    model = random_official_model(seed=0)
    print(f"build (meta -> to_empty + init): {time.perf_counter() - started:.1f} s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, peak RSS {peak_rss_gib():.2f} GiB")

    image = prepare_image(picture())
    started = time.perf_counter()
    scene_code = model.encode([image])[0]
    print(f"encode ({model.config.cond_image_size} px): {time.perf_counter() - started:.1f} s, "
          f"peak RSS {peak_rss_gib():.2f} GiB")
    place_surface(model, scene_code, args.threshold)

    started = time.perf_counter()
    grid = model.density_grid(scene_code, args.resolution, args.chunk_size)
    grid_seconds = time.perf_counter() - started
    print(f"density grid {args.resolution}^3: {grid_seconds:.1f} s, "
          f"{float((grid > args.threshold).float().mean()):.1%} inside, peak RSS {peak_rss_gib():.2f} GiB")

    started = time.perf_counter()
    mesh = with_vertex_colors(surface(grid, args.threshold, model.radius),
                              color_query(model, scene_code, args.chunk_size))
    surface_seconds = time.perf_counter() - started
    print(f"marching cubes + vertex colours: {surface_seconds:.1f} s, {len(mesh.vertices)} vertices, "
          f"{len(mesh.faces)} faces, peak RSS {peak_rss_gib():.2f} GiB")
    print(f"grid + surface (upstream's extract_mesh): {grid_seconds + surface_seconds:.1f} s")


if __name__ == "__main__":
    main()
