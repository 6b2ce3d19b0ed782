"""Image preparation exactly as upstream does it: run.py's framing and compositing, and the
model's own resize to its conditioning size (upstream tsr/utils.py ImagePreprocessor).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

GREY_BACKGROUND = 0.5
# The framed square is resized to the model's 512-pixel input anyway; a larger one only costs
# memory (a 1x50000 strip would pad to 50000^2 pixels, 10 GB as RGBA). Crops whose square would
# be larger are shrunk first, by whole-block averaging, so memory stays bounded (issue 11).
MAX_FRAMED_SIDE = 4096
COMPOSITE_ROWS = 256  # rows composited over the grey at once (prepare_image)


def prepare_image(image: Image.Image, foreground_ratio: float = 0.85) -> np.ndarray:
    """An RGBA picture -> float32 [H, W, 3] in [0, 1]: object framed square, over 0.5 grey.

    Pictures without alpha are taken as fully opaque. Raises ValueError when nothing is visible.
    """
    framed = frame_foreground(_rgba_array(image), foreground_ratio)
    composited = np.empty(framed.shape[:2] + (3,), dtype=np.float32)
    # A band of rows at a time: the same float32 operations on each pixel as on the whole, so the
    # same values, but the temporaries of a 4096^2 frame are a band's, not ~1 GB (issue 11's strip).
    for start in range(0, framed.shape[0], COMPOSITE_ROWS):
        rows = slice(start, start + COMPOSITE_ROWS)
        composited[rows] = _over_grey(framed[rows])
    return composited


def _over_grey(framed: np.ndarray) -> np.ndarray:
    rgba = framed.astype(np.float32) / 255.0
    alpha = rgba[..., 3:4]
    rgb = rgba[..., :3] * alpha + (1 - alpha) * GREY_BACKGROUND
    # upstream run.py stores a uint8 picture (truncating, not rounding) and the model divides by 255
    return (rgb * 255.0).astype(np.uint8).astype(np.float32) / 255.0


def frame_foreground(rgba: np.ndarray, ratio: float) -> np.ndarray:
    """Crop to the visible pixels, pad to a square, then pad so the object fills ``ratio`` of it.

    Like upstream tsr/utils.py resize_foreground, the crop ends before the last visible row and
    column (a slice end that should have been inclusive); kept so results match upstream.
    """
    rows, cols = np.nonzero(rgba[..., 3] > 0)
    if rows.size == 0:
        raise ValueError("The picture has no visible object: its alpha channel is zero everywhere.")
    crop = rgba[rows.min():rows.max(), cols.min():cols.max()]
    if min(crop.shape[:2]) == 0:
        raise ValueError("The visible object is a single line of pixels; recond needs a picture of an object.")
    crop = _shrunk_to_fit(crop, int(max(crop.shape[:2]) / ratio))
    square = _pad_centred(crop, max(crop.shape[:2]))
    return _pad_centred(square, int(square.shape[0] / ratio))


def _shrunk_to_fit(crop: np.ndarray, framed_side: int) -> np.ndarray:
    """The crop reduced by a whole factor when its framed square would exceed MAX_FRAMED_SIDE."""
    factor = -(-framed_side // MAX_FRAMED_SIDE)  # ceiling division
    if factor <= 1:
        return crop
    return np.asarray(Image.fromarray(crop, "RGBA").reduce(factor))


def _pad_centred(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    top, left = (size - height) // 2, (size - width) // 2
    return np.pad(image, ((top, size - height - top), (left, size - width - left), (0, 0)))


def _rgba_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB").convert("RGBA"))


def model_input(images: torch.Tensor | Sequence[np.ndarray | Image.Image | torch.Tensor],
                size: int) -> torch.Tensor:
    """Images -> float32 [B, 3, size, size] in [0, 1], resized the way upstream's model does it.

    Accepts a [B, H, W, 3] tensor/array or a list of [H, W, 3] arrays (uint8 or float in [0, 1])
    or PIL images.
    """
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        batch = _as_float_tensor(images)
    else:
        batch = torch.stack([_as_float_tensor(image) for image in images])
    nchw = batch.permute(0, 3, 1, 2)
    return F.interpolate(nchw, (size, size), mode="bilinear", align_corners=False, antialias=True)


def _as_float_tensor(image: np.ndarray | Image.Image | torch.Tensor) -> torch.Tensor:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image.astype(np.float32) / 255.0 if image.dtype == np.uint8
                                 else np.ascontiguousarray(image, dtype=np.float32))
    if image.shape[-1] != 3:
        raise ValueError(f"Expected RGB pictures with 3 channels last, got shape {tuple(image.shape)}.")
    return image.float()
