"""Any surface to the face budget in bounded time: keep its topology where it can be kept, and
degrade, chosen by measuring, where it cannot (issue 22).

A clean object (bench_chair: one closed body, genus 27) keeps its topology through the
simplification (recond.pipeline.topology), so its STL stays a printable solid. A noisy field
(fog, glass, hair, a bad cut-out; random weights give one every time) is another thing: the
full-size random-weight model at 128^3 gave 1.9 M faces with ~12,000 handles, and the
topology-keeping collapse ran 80 s to stop at 99,666 faces in 913 bodies, 20x the target, on
which xatlas then ran for over 20 minutes. Every handle and every body costs the topology-keeping
collapse a floor of faces it cannot go below, so the stage measures them first and:

1. meshes a coarser grid when the grid's surface would exceed ``max_surface_faces`` (counted
   from the cells the level crosses, in one pass over the grid, before marching cubes runs);
2. keeps topology only when the handles and bodies leave room for the budget
   (FACES_PER_FEATURE each); else simplifies without the constraint, then drops the fragments
   that leaves, as the stage drops floaters;
3. caps the faces last, whole bodies largest first, so nothing goes on over the budget.

Each step is linear or n log n in the faces (marching cubes, edge sorting, quadric collapse).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from recond.pipeline.topology import simplify, simplify_freely

# Faces marching cubes makes per grid cell the level crosses: 2.07-2.46 on a noisy tiny field
# at 96^3-32^3 (measured for issue 22); the higher figure, so the estimate errs on the safe side.
FACES_PER_CROSSING_CELL = 2.5
# Faces the topology-keeping collapse needs per handle or body at the least: it stopped at
# 17,355 faces on a noisy surface of ~2,600 handles (6.6 per handle); twice that, so a clean
# surface reaches its target with room to spare and a noisy one is never tried.
FACES_PER_FEATURE = 16
MIN_GRID = 16  # the coarsest grid a surface is meshed on (JobSettings.mc_resolution's floor)
# A noisy surface is simplified freely, at ~20-50k input faces a second on this 2-core machine
# (pymeshlab, 351k faces -> 2,000 in 7-17 s under load); one with more faces than this many
# times the target is meshed on a coarser grid first, which costs one more marching cubes (fast
# at a low resolution) and makes the noise coarser too: fewer fragments and handles to collapse.
NOISY_FACES_PER_TARGET = 8
BUDGET_SLACK = 1.05  # the stage hands on at most target_faces times this (issue 22)
NOISY = "the surface is noisy"
COARSER = "its surface would have had about"


@dataclass(frozen=True)
class Roughness:
    """What makes a surface hard to simplify: its bodies and its handles (tunnels, loops)."""

    bodies: int
    handles: int  # from the Euler characteristic: bodies - chi / 2 (an open edge counts as half a handle)

    def keeps_topology_within(self, target_faces: int) -> bool:
        return FACES_PER_FEATURE * (self.bodies + self.handles) <= target_faces


@dataclass
class Budgeting:
    """What the stage did to reach the budget, for job.json and the job's warnings."""

    grid_resolution: int
    roughness: Roughness | None = None
    topology_kept: bool = True
    steps: list[str] = field(default_factory=list)

    def measure(self, mesh: trimesh.Trimesh, bodies: int) -> Roughness:
        self.roughness = roughness(mesh, bodies)
        return self.roughness

    def warning(self) -> str | None:
        """One sentence for the job's warnings, or None when nothing was degraded."""
        if not self.steps:
            return None
        found = (f" ({_count(self.roughness.bodies, 'body', 'bodies')}, about "
                 f"{_count(self.roughness.handles, 'handle', 'handles')})" if self.roughness else "")
        return f"{NOISY}{found}: " + "; ".join(self.steps)


def crossing_cells(density_grid: np.ndarray, level: float) -> int:
    """Grid cells whose corners lie on both sides of ``level``: where marching cubes puts faces."""
    inside = density_grid > level
    n = inside.shape[0] - 1
    some = np.zeros((n, n, n), dtype=bool)
    every = np.ones((n, n, n), dtype=bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                corner = inside[dx:dx + n, dy:dy + n, dz:dz + n]
                some |= corner
                every &= corner
    return int(np.count_nonzero(some & ~every))


def grid_within_faces(density_grid: torch.Tensor, level: float, max_faces: int,
                      budgeting: Budgeting) -> torch.Tensor:
    """The grid, or a coarser one spanning the same box, whose surface has at most about
    ``max_faces`` faces (the last coarsening is the one ``budgeting`` notes). Faces grow between
    the square (a smooth surface) and the cube (noise finer than the grid) of the resolution, so
    each try shrinks it by the cube root of the excess and counts again: a few counts (one pass
    over the grid each) rather than an overshoot to a needlessly coarse grid."""
    grid, first_estimate = density_grid, estimate_faces(density_grid, level)
    estimate = first_estimate
    while estimate > max_faces and grid.shape[0] > MIN_GRID:
        resolution = max(MIN_GRID, min(grid.shape[0] - 1, int(grid.shape[0] * (max_faces / estimate) ** (1 / 3))))
        # align_corners: the end planes stay on the box's faces, as marching cubes expects them.
        grid = F.interpolate(density_grid[None, None].float(), size=(resolution,) * 3, mode="trilinear",
                             align_corners=True)[0, 0]
        estimate = estimate_faces(grid, level)
    if grid.shape[0] != density_grid.shape[0]:
        budgeting.grid_resolution = int(grid.shape[0])
        budgeting.steps = [step for step in budgeting.steps if not step.startswith(COARSER)]
        budgeting.steps.insert(0, f"{COARSER} {first_estimate:,} faces, so it was meshed on a "
                                  f"{grid.shape[0]}^3 grid instead of {density_grid.shape[0]}^3")
    return grid


def estimate_faces(density_grid: torch.Tensor, level: float) -> int:
    """About how many faces marching cubes would make of this grid, counted without running it."""
    return int(FACES_PER_CROSSING_CELL * crossing_cells(density_grid.numpy(), level))


def _count(number: int, one: str, many: str) -> str:
    return f"{number:,} {one if number == 1 else many}"


def coarser_for_noise(rough: Roughness, faces: int, target_faces: int) -> int | None:
    """The face count to mesh a coarser grid for, when a noisy surface (one that cannot keep
    its topology within the target) has far more faces than the target; else None."""
    cap = NOISY_FACES_PER_TARGET * target_faces
    if target_faces == 0 or rough.keeps_topology_within(target_faces) or faces <= cap:
        return None
    return cap


def roughness(mesh: trimesh.Trimesh, bodies: int) -> Roughness:
    """Bodies (counted by the caller, who split the surface already) and handles of a surface."""
    return Roughness(bodies, max(0, round(bodies - mesh.euler_number / 2)))


def to_budget(mesh: trimesh.Trimesh, target_faces: int, bodies: int, floater_fraction: float,
              budgeting: Budgeting) -> trimesh.Trimesh:
    """The surface simplified to at most ``target_faces`` x BUDGET_SLACK faces (0: kept whole),
    its topology kept when its roughness leaves room for that, degraded otherwise."""
    if target_faces == 0 or len(mesh.faces) <= target_faces:
        return mesh
    rough = budgeting.roughness or budgeting.measure(mesh, bodies)
    limit = int(target_faces * BUDGET_SLACK)
    if rough.keeps_topology_within(target_faces):
        simple = simplify(mesh, target_faces)
        if len(simple.faces) <= limit:
            return simple
        budgeting.steps.append(f"keeping its topology left {len(simple.faces):,} faces, so it was "
                               "simplified further without keeping it")
    else:
        simple = mesh
        budgeting.steps.append(f"its handles and bodies leave no room for {target_faces:,} faces with its "
                               "topology kept, so it was simplified without keeping it")
    budgeting.topology_kept = False
    simple = simplify_freely(simple, target_faces)
    simple = _without_fragments(simple, floater_fraction, budgeting)
    return hard_cap(simple, limit, budgeting)


def drop_floaters(mesh: trimesh.Trimesh, min_fraction: float) -> tuple[trimesh.Trimesh, int, int]:
    """Drop pieces whose area is below ``min_fraction`` of the largest piece's.

    Returns the kept mesh, the number of pieces and the number dropped. The largest piece is
    always kept, so the object itself never goes. Pieces are edge-connected faces.
    """
    labels, areas = _pieces(mesh)
    keep = areas >= min_fraction * areas.max()
    dropped = int((~keep).sum())
    if dropped == 0:
        return mesh, len(areas), 0
    return _faces_kept(mesh, keep[labels]), len(areas), dropped


def _without_fragments(mesh: trimesh.Trimesh, min_fraction: float, budgeting: Budgeting) -> trimesh.Trimesh:
    """Drop the small pieces a free collapse breaks a noisy surface into, as the stage's floaters."""
    kept, _, dropped = drop_floaters(mesh, min_fraction)
    if dropped:
        budgeting.steps.append(f"{_count(dropped, 'small fragment', 'small fragments')} dropped")
    return kept


def hard_cap(mesh: trimesh.Trimesh, max_faces: int, budgeting: Budgeting) -> trimesh.Trimesh:
    """At most ``max_faces``: whole bodies, largest area first; the largest body cut short only
    when it alone is over (a last resort that no measured surface has needed)."""
    if len(mesh.faces) <= max_faces:
        return mesh
    labels, areas = _pieces(mesh)
    sizes = np.bincount(labels)
    order = np.argsort(-areas)
    fitting = order[np.cumsum(sizes[order]) <= max_faces]
    if len(fitting):
        keep = np.isin(labels, fitting)
        budgeting.steps.append(f"{_count(len(areas) - len(fitting), 'body', 'bodies')} beyond {max_faces:,} "
                               "faces dropped")
    else:
        keep = np.zeros(len(mesh.faces), dtype=bool)
        keep[np.flatnonzero(labels == order[0])[:max_faces]] = True
        budgeting.steps.append(f"the largest body was cut to {max_faces:,} faces")
    return _faces_kept(mesh, keep)


def _pieces(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    """Each face's piece (edge-connected faces) and each piece's area."""
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    return labels, np.bincount(labels, weights=mesh.area_faces)


def _faces_kept(mesh: trimesh.Trimesh, keep: np.ndarray) -> trimesh.Trimesh:
    kept = mesh.copy()
    kept.update_faces(keep)
    kept.remove_unreferenced_vertices()
    return kept
