"""The density field on the marching-cubes grid, whole or coarse to fine, and its level set (PyMCubes).

Grid layout and vertex convention follow upstream's MarchingCubeHelper (tsr/models/isosurface.py):
``linspace(0, 1, R)`` per axis, 'ij' indexing, vertices as (dim0, dim1, dim2) index / (R - 1).

Most of the 256^3 grid lies far inside or far outside the object, where the only thing marching
cubes needs is the side of the level. The refined grid samples every REFINE_STRIDE-th plane
first, then evaluates exactly the blocks of cells the surface can pass through, and grows that
region until no surface crosses its border. Its marching-cubes surface therefore has exactly the
full grid's vertices in every evaluated cell; what it can miss is a piece of surface lying
wholly between coarse samples that are all far from the level (a speck smaller than a block,
which the mesh stage would drop as a floater anyway). tests/triposr/test_density_grid.py checks both.

An object's surface is thin: the blocks it passes through are a few per cent of the grid
(bench_chair at 256^3: 6 % of the points evaluated in all). A noisy field's "surface" fills the
box, and refining it would evaluate every point, which on a CPU and the full-size decoder is
upstream's ~12 minutes (issue 22). So when the blocks to refine pass MAX_REFINED_SHARE of the
grid (and MIN_REFINED_POINTS), the field is sampled on a grid REFINE_STRIDE times coarser instead, and the caller sees the
smaller grid (recond.pipeline.runner warns; the mesh stage meshes what it is given).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

DensityAt = Callable[[torch.Tensor], torch.Tensor]  # points [N, 3] -> density_act [N]
Report = Callable[[float], None]

# Coarse samples on every 4th grid plane: 1/64 of the points at any resolution.
REFINE_STRIDE = 4
# A block is refined when a corner's density is within this factor (e^2 = 7.4x) of the level,
# or its corners lie on both sides. Measured on bench_chair at 256: e^1 already loses none of
# the surface; e^2 leaves room for fields less regular than its fitted one.
REFINE_LOG_MARGIN = 2.0
# Share of the refined grid's progress given to the coarse pass (1/64 of the points, but
# the fine pass usually evaluates only a few times as many).
COARSE_SHARE = 0.1
# Past this share of the grid's blocks to refine, the field is taken for noise (see the module doc):
# bench_chair's surface needs 5 % at 256^3, a random-weight full-size field 100 %.
MAX_REFINED_SHARE = 0.25
# ... and past this many points: a small grid's blocks are coarse next to its surface (a clean tiny
# field at 48^3 needs most of them), and a 64^3 grid costs little whatever its field.
MIN_REFINED_POINTS = 64 ** 3


def grid_axis(resolution: int, radius: float) -> torch.Tensor:
    """Coordinates of the grid planes along one axis, in [-radius, radius] (ends included)."""
    unit = torch.linspace(0, 1, resolution)
    return unit_to_box(unit, radius)


def unit_to_box(unit: torch.Tensor, radius: float) -> torch.Tensor:
    # upstream scale_tensor from (0, 1) to (-r, r), same order of operations
    return (unit - 0) / (1 - 0) * (radius - (-radius)) + (-radius)


def grid_point_chunks(resolution: int, radius: float, chunk_size: int) -> Iterator[torch.Tensor]:
    """Grid points [n, 3] in x-major order, a chunk at a time (the whole grid never exists at once)."""
    axis = grid_axis(resolution, radius)
    total = resolution ** 3
    for start in range(0, total, chunk_size):
        yield _points_at(torch.arange(start, min(start + chunk_size, total)), resolution, axis)


def full_density_grid(density_at: DensityAt, resolution: int, radius: float, chunk_size: int,
                      progress: Report | None = None) -> torch.Tensor:
    """density_act at every grid point, [R, R, R] float32 (upstream's grid)."""
    report = progress or (lambda fraction: None)
    grid = torch.empty(resolution ** 3, dtype=torch.float32)
    start = 0
    for points in grid_point_chunks(resolution, radius, chunk_size):
        grid[start:start + len(points)] = density_at(points).float()
        start += len(points)
        report(start / grid.numel())
    return grid.view(resolution, resolution, resolution)


def refined_density_grid(density_at: DensityAt, resolution: int, radius: float, level: float,
                         chunk_size: int, progress: Report | None = None,
                         max_refined_share: float | None = MAX_REFINED_SHARE) -> torch.Tensor:
    """The grid, exact wherever the surface density_act == level can pass; or, for a field whose
    surface would need more than ``max_refined_share`` of the grid refined (None: no bound), the
    whole grid at resolution / REFINE_STRIDE (see the module doc)."""
    report = progress or (lambda fraction: None)
    axis = grid_axis(resolution, radius)
    coarse_index = np.unique(np.r_[np.arange(0, resolution - 1, REFINE_STRIDE), resolution - 1])
    if len(coarse_index) < 3:  # too small a grid to skip anything
        return full_density_grid(density_at, resolution, radius, chunk_size, progress)

    known = np.zeros((resolution,) * 3, dtype=bool)
    known[np.ix_(coarse_index, coarse_index, coarse_index)] = True
    values = np.zeros((resolution,) * 3, dtype=np.float32)
    _evaluate(density_at, known, values, axis, chunk_size, lambda f: report(COARSE_SHARE * f))
    coarse = values[np.ix_(coarse_index, coarse_index, coarse_index)]

    inside = coarse > level
    near = np.abs(np.log(np.maximum(coarse, 1e-30)) - math.log(level)) < REFINE_LOG_MARGIN
    blocks = _corner_any(inside) & ~_corner_all(inside) | _corner_any(near)
    blocks = _grown_by_one(blocks)
    if _too_much_surface(blocks, resolution, max_refined_share):
        return _coarser_grid(density_at, resolution, radius, chunk_size,
                             lambda f: report(COARSE_SHARE + (1 - COARSE_SHARE) * f))
    _fill_unevaluated(values, known, coarse)

    fine_report = lambda f: report(COARSE_SHARE + (1 - COARSE_SHARE) * f)  # noqa: E731
    while True:
        cells = blocks[np.ix_(*(np.arange(resolution - 1) // REFINE_STRIDE,) * 3)]
        todo = _cell_corners(cells) & ~known
        _evaluate(density_at, todo, values, axis, chunk_size, fine_report)
        known |= todo
        above = values > level
        crossing = _corner_any(above) & ~_corner_all(above) & ~cells
        if not crossing.any():
            break
        # The surface leaves the evaluated region: evaluate the blocks it enters, and repeat
        # (rarely more than a few blocks, so their progress is not reported separately).
        fine_report = lambda f: None  # noqa: E731
        ix, iy, iz = np.nonzero(crossing)
        blocks[ix // REFINE_STRIDE, iy // REFINE_STRIDE, iz // REFINE_STRIDE] = True
        if _too_much_surface(blocks, resolution, max_refined_share):  # it grew into noise after all
            # (the fine pass reported its progress to the end already: no second, backward run)
            return _coarser_grid(density_at, resolution, radius, chunk_size, lambda f: None)
    report(1.0)
    return torch.from_numpy(values)


def _too_much_surface(blocks: np.ndarray, resolution: int, max_refined_share: float | None) -> bool:
    """Would refining these blocks evaluate more than the bound (see MAX_REFINED_SHARE)?"""
    if max_refined_share is None:
        return False
    points = int(np.count_nonzero(blocks)) * REFINE_STRIDE ** 3
    return points > max(max_refined_share * resolution ** 3, MIN_REFINED_POINTS)


def _coarser_grid(density_at: DensityAt, resolution: int, radius: float, chunk_size: int,
                  report: Report) -> torch.Tensor:
    """The whole grid REFINE_STRIDE times coarser, for a field too noisy to refine, its progress
    (0..1) handed to ``report``. Evaluated anew (1/64 of the points): the coarse samples above end
    unevenly spaced at the last plane."""
    return full_density_grid(density_at, max(2, math.ceil(resolution / REFINE_STRIDE)), radius, chunk_size, report)


def _fill_unevaluated(values: np.ndarray, known: np.ndarray, coarse: np.ndarray) -> None:
    """Give each point not evaluated the coarse value at its block's lower corner.

    That block is skipped (else the point would be evaluated), so its corners all lie on one
    side of the level, and every skipped block sharing the point shares a corner with it:
    the stand-in value is on the side all of them agree on. Filled slab by slab, so no
    second full-size array is made.
    """
    resolution = values.shape[0]
    home = np.minimum(np.arange(resolution) // REFINE_STRIDE, coarse.shape[0] - 2)
    for x in range(resolution):
        slab = coarse[home[x]][np.ix_(home, home)]
        missing = ~known[x]
        values[x][missing] = slab[missing]


def _evaluate(density_at: DensityAt, mask: np.ndarray, values: np.ndarray, axis: torch.Tensor,
              chunk_size: int, report: Report) -> None:
    """Fill values at the grid points where mask is set, a chunk of points at a time."""
    where = np.nonzero(mask)
    if len(where[0]) == 0:
        return
    points = torch.from_numpy(np.stack([axis.numpy()[index] for index in where], axis=1))
    found = torch.cat([density_at(chunk).float() for chunk in _reported(points.split(chunk_size), report)])
    values[where] = found.numpy()


def _reported(chunks: tuple[torch.Tensor, ...], report: Report) -> Iterator[torch.Tensor]:
    for done, chunk in enumerate(chunks, start=1):
        yield chunk
        report(done / len(chunks))


def _points_at(index: torch.Tensor, resolution: int, axis: torch.Tensor) -> torch.Tensor:
    """Coordinates [n, 3] of flat x-major grid indices."""
    return torch.stack([axis[index // resolution ** 2], axis[(index // resolution) % resolution],
                        axis[index % resolution]], dim=-1)


def _corners(points: np.ndarray) -> Iterator[np.ndarray]:
    """The eight corner values of every cell of a point grid, as eight [n-1]^3 views."""
    n = points.shape[0] - 1
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                yield points[dx:dx + n, dy:dy + n, dz:dz + n]


def _corner_any(points: np.ndarray) -> np.ndarray:
    result = np.zeros(tuple(s - 1 for s in points.shape), dtype=bool)
    for corner in _corners(points):
        result |= corner
    return result


def _corner_all(points: np.ndarray) -> np.ndarray:
    result = np.ones(tuple(s - 1 for s in points.shape), dtype=bool)
    for corner in _corners(points):
        result &= corner
    return result


def _cell_corners(cells: np.ndarray) -> np.ndarray:
    """Grid points that are a corner of at least one marked cell."""
    n = cells.shape[0]
    points = np.zeros((n + 1,) * 3, dtype=bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                points[dx:dx + n, dy:dy + n, dz:dz + n] |= cells
    return points


def _grown_by_one(blocks: np.ndarray) -> np.ndarray:
    """Blocks and their 26 neighbours (a 3x3x3 binary dilation), in torch rather than scipy:
    the density grid is the device part's, and that needs only torch, numpy, pillow and
    pyyaml (benchmarks/bench_gpu.py runs on a GPU box with nothing else, issue 23)."""
    grid = torch.from_numpy(blocks.astype(np.float32))[None, None]
    return F.max_pool3d(grid, kernel_size=3, stride=1, padding=1)[0, 0].numpy() > 0


def marching_cubes(density_grid: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Level set density == threshold -> unit-cube vertices [V, 3] float32 and faces [F, 3] int64.

    Only the box around the points above the level (and one plane beyond) is meshed: every cell
    the surface passes through lies in it, so the surface is the whole grid's, in the same order,
    for a tenth of the cells on a 256^3 grid (~0.5 CPU-s of the host part, issue 23)."""
    import mcubes  # the host part's (the mesh stage); the model's own work needs no PyMCubes

    low, high = _box_above(density_grid, threshold)
    box = density_grid[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
    vertices, faces = mcubes.marching_cubes((box - np.float32(threshold)).astype(np.float32), 0.0)
    unit = (vertices + np.asarray(low, dtype=vertices.dtype)).astype(np.float32)
    return unit / np.float32(density_grid.shape[0] - 1.0), faces.astype(np.int64)


def _box_above(grid: np.ndarray, level: float) -> tuple[list[int], list[int]]:
    """Index bounds (low inclusive, high exclusive) of the points above ``level``, grown by one
    point on each side within the grid; an empty box when none is."""
    above = grid > np.float32(level)
    low, high = [], []
    for axis in range(3):
        present = np.flatnonzero(above.any(axis=tuple(other for other in range(3) if other != axis)))
        if len(present) == 0:
            return [0, 0, 0], [0, 0, 0]
        low.append(max(int(present[0]) - 1, 0))
        high.append(min(int(present[-1]) + 2, grid.shape[axis]))
    return low, high
