"""The rasteriser's CPU path: one compiled loop over the triangles (numba), same answer as torch's.

The batched torch rasteriser (recond.pipeline.raster) suits a GPU, where thousands of small
triangles are tested in one launch. On a CPU it spends most of its time grouping triangles,
building candidate grids and sorting candidates out: 30 turntable views of a 20k-face mesh
took ~1.7 CPU-s, the texture bake's UV raster ~0.3 (bench_chair, issue 23: the host part is
what bounds a GPU server). A loop that visits each triangle's box once and keeps a running
best per pixel does the same work in a few milliseconds a view.

It decides exactly as the torch path does, in float32 with the same operations in the same
order: a pixel goes to the candidate with the least distance outside its triangle (0 inside),
then the least depth, then the highest face id. The compiled kernel is cached on disk (numba's
cache beside this file or in the user's cache folder); where numba cannot compile or cache
(no compiler target, a read-only home), ``worth_it()`` is False and the torch path runs.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
import structlog
import torch

log = structlog.get_logger(__name__)

# The batched torch path takes ~1 ms a view per 1,000 triangles here; below this many in one
# call, loading the kernel costs more than a job's views and bake would save.
COMPILE_FROM_TRIANGLES = 5_000

_lock = threading.Lock()
_kernel: list[Callable[..., None] | None] = []  # compiled once per process: [kernel] or [None]


def _scan(triangles: np.ndarray, height: int, width: int, margin: float,
          face_id: np.ndarray, bary: np.ndarray, depth: np.ndarray, outside_best: np.ndarray) -> None:
    """For every triangle [T, 3, 3] (x, y in pixels, z depth), every pixel centre in its box
    that lies inside it (or within ``margin`` pixels of it) competes for the pixel: flat
    ``face_id`` [H*W] (-1 empty), ``bary`` [H*W, 3], ``depth`` and ``outside_best`` [H*W]
    (both +inf where empty) hold the winners."""
    half = np.float32(0.5)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    tiny = np.float32(1e-12)
    grow = np.float32(margin)
    for t in range(triangles.shape[0]):
        ax, ay, az = triangles[t, 0, 0], triangles[t, 0, 1], triangles[t, 0, 2]
        bx, by, bz = triangles[t, 1, 0], triangles[t, 1, 1], triangles[t, 1, 2]
        cx, cy, cz = triangles[t, 2, 0], triangles[t, 2, 1], triangles[t, 2, 2]
        area2 = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if not abs(area2) > tiny:
            continue
        col0 = max(np.ceil(min(ax, bx, cx) - grow - half), zero)
        col1 = min(np.floor(max(ax, bx, cx) + grow - half), np.float32(width - 1))
        row0 = max(np.ceil(min(ay, by, cy) - grow - half), zero)
        row1 = min(np.floor(max(ay, by, cy) + grow - half), np.float32(height - 1))
        if not (col1 >= col0 and row1 >= row0):  # no pixel centre in the box (or not finite)
            continue
        scale0 = scale1 = scale2 = one
        if margin > 0:
            # A weight times twice the area over the opposite edge's length is the distance to it.
            scale0 = abs(area2) / max(np.sqrt((cx - bx) * (cx - bx) + (cy - by) * (cy - by)), tiny)
            scale1 = abs(area2) / max(np.sqrt((ax - cx) * (ax - cx) + (ay - cy) * (ay - cy)), tiny)
            scale2 = abs(area2) / max(np.sqrt((bx - ax) * (bx - ax) + (by - ay) * (by - ay)), tiny)
        for row in range(int(row0), int(row1) + 1):
            py = np.float32(row) + half
            for col in range(int(col0), int(col1) + 1):
                px = np.float32(col) + half
                w0 = ((cx - bx) * (py - by) - (cy - by) * (px - bx)) / area2
                w1 = ((ax - cx) * (py - cy) - (ay - cy) * (px - cx)) / area2
                w2 = one - w0 - w1
                if margin > 0:
                    outside = max(-min(w0 * scale0, w1 * scale1, w2 * scale2), zero)
                else:
                    outside = -min(min(w0, w1, w2), zero)
                if not outside <= grow:
                    continue
                b0, b1, b2 = max(w0, zero), max(w1, zero), max(w2, zero)
                total = b0 + b1 + b2
                b0, b1, b2 = b0 / total, b1 / total, b2 / total
                z = b0 * az + b1 * bz + b2 * cz
                pixel = row * width + col
                best = outside_best[pixel]
                if outside < best or (outside == best and (z < depth[pixel] or (
                        z == depth[pixel] and t > face_id[pixel]))):
                    outside_best[pixel] = outside
                    depth[pixel] = z
                    face_id[pixel] = t
                    bary[pixel, 0], bary[pixel, 1], bary[pixel, 2] = b0, b1, b2


def kernel() -> Callable[..., None] | None:
    """The compiled scan, or None where numba cannot provide one (the log says why, once)."""
    with _lock:
        if not _kernel:
            _kernel.append(_compile())
        return _kernel[0]


def worth_it(triangles: int) -> bool:
    """Whether to rasterise ``triangles`` with the compiled kernel: always once it is loaded;
    before that only for a mesh large enough to repay loading it (~1.3 CPU-s per process: numba
    and the cached kernel), so a process that only ever draws small meshes never loads it."""
    with _lock:
        loaded = bool(_kernel)
    if not loaded and triangles < COMPILE_FROM_TRIANGLES:
        return False
    return kernel() is not None


def _compile() -> Callable[..., None] | None:
    try:
        import numba
    except ImportError as error:
        log.warning("compiled rasteriser unavailable; the torch one runs", reason=str(error))
        return None
    for cache in (True, False):
        try:
            compiled: Any = numba.njit(cache=cache, nogil=True)(_scan)
            probe = np.zeros((1, 3, 3), dtype=np.float32)
            compiled(probe, 1, 1, 0.0, np.full(1, -1, np.int64), np.zeros((1, 3), np.float32),
                     np.full(1, np.inf, np.float32), np.full(1, np.inf, np.float32))
            return compiled
        except Exception as error:  # noqa: BLE001 - numba raises many kinds; any means "not here"
            log.warning("compiled rasteriser failed to build", cache=cache, reason=str(error))
    return None


def rasterize_cpu(triangles: torch.Tensor, height: int, width: int,
                  margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(face_id [H, W], bary [H, W, 3], depth [H, W]) for float32 CPU triangles [T, 3, 3]."""
    scan = kernel()
    assert scan is not None, "call worth_it() first"
    pixels = height * width
    face_id = np.full(pixels, -1, dtype=np.int64)
    bary = np.zeros((pixels, 3), dtype=np.float32)
    depth = np.full(pixels, np.inf, dtype=np.float32)
    outside = np.full(pixels, np.inf, dtype=np.float32)
    scan(np.ascontiguousarray(triangles.numpy(), dtype=np.float32), height, width, float(margin),
         face_id, bary, depth, outside)
    return (torch.from_numpy(face_id).reshape(height, width), torch.from_numpy(bary).reshape(height, width, 3),
            torch.from_numpy(depth).reshape(height, width))
