"""The device part on a GPU, float32 against float16: encode and density grid per picture.

Needs only torch, numpy, pillow and pyyaml, and recond's model package (recond/triposr, found
beside this file: no install, no pydantic, trimesh, rembg ...), so it runs on a lent GPU box
with a CUDA torch and nothing else of recond's. One command, a few minutes at most:

    python benchmarks/bench_gpu.py                       # cuda, full-size TripoSR architecture
    python benchmarks/bench_gpu.py --device cpu --tiny   # a quick check that it runs, anywhere

The full-size official architecture (recond/triposr/official_config.yaml) with random weights,
the same weights for both dtypes (the real ones are 1.7 GB and need the hub), the density bias
shifted so the surface level cuts ~15% of the box as an object would (bench_triposr.py).
float16 as ``dtype = "float16"`` does it (the default on CUDA): the encoder parts stored and
computed in float16, the decoder, grid and colours in float32 (recond.triposr.model).

Per dtype it prints, over ``--pictures`` synthetic pictures after one warm-up: seconds of the
encode and of the density grid (the refined grid the pipeline uses, at ``--resolution``) per
picture, the device part's pictures per second (encode + grid, one picture at a time as the
worker sends them; loading and background removal, a few ms for a picture with alpha, left
out), peak GPU memory (torch.cuda.max_memory_allocated; peak RSS on a CPU) and, for float16,
the occupancy IoU (density > level on the grid) against float32 on each picture.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # recond's model package, uninstalled

from recond.triposr.config import OFFICIAL_CONFIG_PATH, ViTConfig, load_config, parse_config  # noqa: E402
from recond.triposr.model import ENCODER_PARTS, TripoSR  # noqa: E402
from recond.triposr.preprocess import prepare_image  # noqa: E402

LEVEL = 25.0  # JobSettings.mc_threshold's default (not imported: recond.config needs pydantic)
INSIDE_FRACTION = 0.15
# A small architecture of the same shape for --tiny (recond.triposr.tiny's, which imports
# recond.config): a check that the script runs, not a figure.
TINY_CONFIG = {
    "cond_image_size": 64,
    "image_tokenizer": {"pretrained_model_name_or_path": "tiny"},
    "tokenizer": {"plane_size": 8, "num_channels": 32},
    "backbone": {"in_channels": 32, "num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 1,
                 "cross_attention_dim": 32},
    "post_processor": {"in_channels": 32, "out_channels": 8},
    "decoder": {"in_channels": 24, "n_neurons": 16, "n_hidden_layers": 2, "activation": "silu"},
    "renderer": {"radius": 0.87, "feature_reduction": "concat", "density_activation": "exp",
                 "density_bias": -1.0, "num_samples_per_ray": 32},
}
TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
            "patch_size": 16, "image_size": 32, "num_channels": 3, "layer_norm_eps": 1e-12, "qkv_bias": True}


def random_model(tiny: bool, device: torch.device, seed: int = 0) -> TripoSR:
    """The architecture with seeded random weights, on ``device`` in float32."""
    config = (parse_config(TINY_CONFIG, ViTConfig(**TINY_VIT)) if tiny
              else load_config(OFFICIAL_CONFIG_PATH))
    with torch.device("meta"):
        model = TripoSR(config)
    model.to_empty(device=device)
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        embeddings = model.image_tokenizer.model.embeddings
        for parameter in (embeddings.cls_token, embeddings.position_embeddings, model.tokenizer.embeddings):
            parameter.normal_(0.0, 0.5)
    return model.eval()


def in_dtype(model: TripoSR, dtype: torch.dtype) -> TripoSR:
    """A copy whose encoder parts are stored and computed in ``dtype``, as from_pretrained does."""
    converted = copy.deepcopy(model)
    for name, module in converted.named_children():
        if f"{name}." in ENCODER_PARTS:
            module.to(dtype)
    converted.compute_dtype = dtype
    return converted


def pictures(count: int) -> list[np.ndarray]:
    """Prepared pictures of differently placed and coloured ellipses on transparency."""
    prepared = []
    for index in range(count):
        image = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
        shift = 12 * index
        ImageDraw.Draw(image).ellipse((100 + shift, 80, 412, 440 - shift),
                                      fill=(190 - 20 * index % 160, 90 + 15 * index % 120, 50, 255))
        prepared.append(prepare_image(image))
    return prepared


def place_surface(model: TripoSR, scene_code: torch.Tensor) -> None:
    """Shift the density bias so LEVEL sits at the (1 - INSIDE_FRACTION) quantile of a coarse grid."""
    grid = model.density_grid(scene_code, 32)
    level = float(np.quantile(np.log(grid.numpy().astype(np.float64)), 1 - INSIDE_FRACTION))
    with torch.no_grad():
        model.decoder.layers[-1].bias[0] += math.log(LEVEL) - level


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_device_part(model: TripoSR, picture: np.ndarray, resolution: int, chunk_size: int,
                      device: torch.device) -> tuple[float, float, np.ndarray]:
    """Encode and density grid of one picture, as the pipeline's device part runs them."""
    synchronize(device)
    started = time.perf_counter()
    scene_code = model.encode([picture])[0]
    synchronize(device)
    encoded = time.perf_counter()
    grid = model.density_grid(scene_code, resolution, chunk_size, level=LEVEL)
    synchronize(device)
    return encoded - started, time.perf_counter() - encoded, grid.numpy() > LEVEL


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB (whole process)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device: cuda, cuda:1, cpu ...")
    parser.add_argument("--tiny", action="store_true", help="a tiny architecture (checks that it runs)")
    parser.add_argument("--pictures", type=int, default=None, help="timed pictures (default 8; tiny 2)")
    parser.add_argument("--resolution", type=int, default=None, help="density grid size (default 256; tiny 64)")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="points per decoder call (default 262144 on a GPU, 8192 on a CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"torch {torch.__version__} sees no CUDA GPU; use --device cpu --tiny to check the script")
    count = args.pictures or (2 if args.tiny else 8)
    resolution = args.resolution or (64 if args.tiny else 256)
    chunk_size = args.chunk_size or (262_144 if device.type == "cuda" else 8192)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"machine: {platform.node()}, {os.cpu_count()} cpus, device {device} ({name}), torch {torch.__version__}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"architecture {'tiny' if args.tiny else 'full-size official'}, random weights; {count} pictures "
          f"after one warm-up, density grid {resolution}^3 (refined, level {LEVEL:g}), chunk_size {chunk_size}")

    base = random_model(args.tiny, device)
    inputs = pictures(count + 1)
    place_surface(base, base.encode([inputs[0]])[0])
    print(f"{sum(p.numel() for p in base.parameters()) / 1e6:.1f} M parameters")
    occupancy: dict[str, list[np.ndarray]] = {}
    for dtype in (torch.float32, torch.float16):
        model = base if dtype == torch.float32 else in_dtype(base, dtype)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        timed_device_part(model, inputs[0], resolution, chunk_size, device)  # warm-up: kernels, allocator
        times = [timed_device_part(model, picture, resolution, chunk_size, device) for picture in inputs[1:]]
        encode = [t[0] for t in times]
        grid = [t[1] for t in times]
        occupancy[str(dtype)] = [t[2] for t in times]
        print(f"\n{str(dtype).removeprefix('torch.')}: encode {np.mean(encode):.3f} s per picture "
              f"(min {min(encode):.3f}, max {max(encode):.3f}), density grid {np.mean(grid):.3f} s "
              f"(min {min(grid):.3f}, max {max(grid):.3f}); device part {1 / (np.mean(encode) + np.mean(grid)):.2f} "
              f"pictures/s; {peak_memory(device)}")
        if model is not base:
            del model
    ious = [float((exact & half).sum() / max(1, (exact | half).sum()))
            for exact, half in zip(occupancy["torch.float32"], occupancy["torch.float16"])]
    inside = np.mean([grid.mean() for grid in occupancy["torch.float32"]])
    print(f"\noccupancy IoU float16 vs float32: min {min(ious):.4f}, mean {np.mean(ious):.4f} "
          f"({inside:.1%} of the grid inside in float32)")


if __name__ == "__main__":
    main()
