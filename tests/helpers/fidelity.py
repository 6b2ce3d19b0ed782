"""How closely a reduced-precision encoder (bfloat16, float16) reproduces float32: the occupancy of
bench_chair's field for chair.png, on the grid the mesh stage evaluates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from recond.config import JobSettings
from recond.triposr.model import TripoSR
from recond.triposr.preprocess import prepare_image

LEVEL = JobSettings().mc_threshold
FIDELITY_RESOLUTION = 128
MIN_OCCUPANCY_IOU = 0.98  # measured 0.9955 (bfloat16, issue 16) and 0.9994 (float16, torch 2.13)


def occupancy(model: TripoSR, picture: Image.Image) -> np.ndarray:
    """Grid points with density above the surface level, as the mesh stage evaluates them."""
    scene_code = model.encode([prepare_image(picture)])[0]
    return model.density_grid(scene_code, FIDELITY_RESOLUTION, level=LEVEL).numpy() > LEVEL


def chair_occupancy(shared_dir: Path, dtype: torch.dtype) -> tuple[np.ndarray, float]:
    """float32's occupancy of bench_chair + chair.png, and the IoU of ``dtype``'s against it."""
    folder = shared_dir / "reference" / "bench_chair"
    with Image.open(shared_dir / "examples" / "chair.png") as picture:
        exact = occupancy(TripoSR.from_pretrained(folder), picture)
        reduced = occupancy(TripoSR.from_pretrained(folder, dtype=dtype), picture)
    return exact, float((exact & reduced).sum() / (exact | reduced).sum())
