"""UV-unwrap a mesh with xatlas and bake a colour field into a texture image.

Marching-cubes meshes carry colour per vertex, which blurs detail at the vertex spacing; a
baked texture samples the model's colour once per texel instead (the upstream TripoSR
``--bake-texture`` option does the same with xatlas + OpenGL; here the rasteriser is ours).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import trimesh
import xatlas
from PIL import Image
from scipy import ndimage

from recond.pipeline.forked import ForkedCallFailed, call_within
from recond.pipeline.progress import StageClock
from recond.pipeline.raster import interpolate, rasterize

# Empty texels xatlas keeps between charts; the dilation below fills them with the nearest
# chart colour, so bilinear filtering and mipmaps never reach uncoloured atlas background.
# xatlas only approximates the requested resolution (its atlas often comes out ~1.5x larger
# and is then scaled to fit), so this shrinks to ~3 texels: still above 2 x the margin below.
CHART_PADDING = 5
# Texels whose centre lies this close outside a chart are still baked from that chart's
# surface: a bilinear lookup anywhere inside a triangle reads texels up to sqrt(2) away.
EDGE_MARGIN_TEXELS = 1.5
ATLAS_BORDER_TEXELS = 3
# xatlas re-checks a growing chart's whole boundary for self-overlap on every face it adds,
# so unbounded charts on a 200k-face marching-cubes mesh spend ~70 s there (perf: xatlas
# UniformGrid2 createGrid/traverse). Capping the boundary at ~100 edges cut that to ~10 s
# here, with fewer seam vertices and utilisation 0.78 instead of 0.81.
CHART_BOUNDARY_EDGES = 100
# xatlas grows its charts from seeds, then by default moves the seeds and grows them again
# (max_iterations 1), and tries each chart at several rotations while packing. Both cost more
# than they give on marching-cubes charts: on bench_chair's 20k faces one growing pass and no
# rotations took 0.74 instead of 1.54 CPU-s, with 838 charts instead of 599 and 80% of the
# atlas used instead of 76%; on its unsimplified 148k faces, 6.4 s instead of 21.5 s (issue 23,
# one CPU, median of three; the options are xatlas's ChartOptions and PackOptions). More charts
# can be too many for a small texture (a 3k-face mesh made 65 where a 128 texture holds 64):
# then the unwrap is made again with xatlas's defaults, which make fewer.
QUICK_GROWING_PASSES = 0  # xatlas's ChartOptions.max_iterations
QUERY_CHUNK = 1 << 18
# The colour field is sampled on every BAKE_STEP-th texel along each axis, then the image is
# upsampled to the requested size. TripoSR's colour comes from 64 x 64 triplanes (0.027 units
# per triplane texel), while a 1024 atlas of an object gives texels of ~0.003 units: half the
# density still samples the field ~5x finer than it can vary, for a quarter of the decoder
# queries and of the UV raster (together most of the bake at 1024).
BAKE_STEP = 2
# A chart needs room for itself and its padding: at fewer than this many texels a side each,
# the atlas holds nothing but padding. A chart never spans two bodies, so a mesh with more
# bodies than that is not unwrapped at all (issue 22: a noisy surface, hundreds of bodies).
MIN_CHART_TEXELS = 16
# Of the texture stage's time left, the unwrap may take this share; the bake needs the rest.
UNWRAP_SHARE = 0.5
Unwrapped = tuple[np.ndarray, np.ndarray, np.ndarray, int]  # vertex map, faces, uv, charts


@dataclass(frozen=True)
class AtlasFacts:
    """The UV atlas of a baked mesh, for job.json."""

    charts: int
    atlas_use: float  # share of the texture's texels covered by charts

    def as_record(self) -> dict[str, float]:
        return asdict(self)


def chart_capacity(resolution: int) -> int:
    """The most charts a square texture of ``resolution`` texels can usefully hold."""
    return (resolution // MIN_CHART_TEXELS) ** 2


def bake_within_limits(mesh: trimesh.Trimesh, color_at: Callable[[np.ndarray], np.ndarray], resolution: int,
                       clock: StageClock) -> tuple[trimesh.Trimesh, AtlasFacts | None, list[str]]:
    """bake_texture, unless the atlas cannot hold the mesh's charts or the unwrap runs past
    UNWRAP_SHARE of the stage's time left: then the mesh keeps its vertex colours, and the
    warnings say why (issue 22). Never waits on xatlas beyond that share."""
    capacity = chart_capacity(resolution)
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    bodies = int(labels.max()) + 1 if len(labels) else 0
    if bodies > capacity:
        return mesh, None, [f"the mesh has {bodies:,} separate bodies, more charts than a "
                            f"{resolution} texture holds ({capacity:,}), so it keeps vertex colours"]
    share = UNWRAP_SHARE * clock.seconds_left()
    clock(0.0)
    try:
        unwrapped = call_within(lambda: _unwrap(mesh, resolution), share, clock)
    except ForkedCallFailed as error:  # xatlas crashed (seen: SIGSEGV on an 82k-face icosphere)
        return mesh, None, [f"the UV unwrap failed ({error}), so the mesh keeps vertex colours"]
    if unwrapped is None:
        return mesh, None, [f"the UV unwrap ran past its {share:.0f} s share of the texture stage's "
                            "limit and was stopped, so the mesh keeps vertex colours"]
    if unwrapped[3] > capacity:
        return mesh, None, [f"the UV unwrap made {unwrapped[3]:,} charts, more than a {resolution} "
                            f"texture holds ({capacity:,}), so the mesh keeps vertex colours"]
    baked, atlas = bake_texture(mesh, color_at, resolution, clock, unwrapped)
    return baked, atlas, []


def bake_texture(
    mesh: trimesh.Trimesh,
    color_at: Callable[[np.ndarray], np.ndarray],
    resolution: int,
    progress: Callable[[float], None] | None = None,
    unwrapped: Unwrapped | None = None,
) -> tuple[trimesh.Trimesh, AtlasFacts]:
    """Return a new mesh (vertices split at UV seams) whose texture holds color_at on its surface.

    color_at maps points [N, 3] float32 in the mesh's coordinates to colours [N, 3] in [0, 1];
    ``unwrapped``: the mesh's unwrap when the caller made it already (bake_within_limits).
    """
    if len(mesh.faces) == 0:
        raise ValueError("bake_texture needs a mesh with at least one face")
    report = progress or (lambda fraction: None)
    report(0.0)
    vertex_map, faces, uv, charts = unwrapped or _unwrap(mesh, resolution)
    report(0.5)

    vertices = np.asarray(mesh.vertices)[vertex_map]
    samples = max(resolution // BAKE_STEP, 1)
    points, texel_mask = _texel_positions(vertices.astype(np.float32), faces, uv, samples)
    colors = _query_colors(color_at, points, lambda f: report(0.5 + 0.4 * f))
    image = np.zeros((samples, samples, 3), dtype=np.float32)
    image[texel_mask] = colors
    image = _fill_from_nearest(image, texel_mask)
    report(0.95)

    texture = Image.fromarray(np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8))
    # Bilinear upsampling reads only neighbouring samples, which the fill above made chart colours.
    texture = texture.resize((resolution, resolution), Image.Resampling.BILINEAR)
    baked = trimesh.Trimesh(
        vertices=vertices,
        faces=faces,
        # Copies of a vertex split at a seam keep the original's normal, so shading shows no seam.
        vertex_normals=np.asarray(mesh.vertex_normals)[vertex_map],
        visual=trimesh.visual.TextureVisuals(uv=uv, image=texture),
        process=False,
    )
    report(1.0)
    return baked, AtlasFacts(charts, round(float(texel_mask.mean()), 4))


def _unwrap(mesh: trimesh.Trimesh, resolution: int) -> Unwrapped:
    """xatlas charts + packing for a square atlas of `resolution` texels; also the chart count.
    Made the quick way first, and the thorough way when that made more charts than the atlas
    holds (chart_capacity)."""
    unwrapped = _unwrap_with(mesh, resolution, quick=True)
    if unwrapped[3] > chart_capacity(resolution):
        unwrapped = _unwrap_with(mesh, resolution, quick=False)
    return unwrapped


def _unwrap_with(mesh: trimesh.Trimesh, resolution: int, quick: bool) -> Unwrapped:
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = resolution
    pack.padding = CHART_PADDING
    # Aligning charts to 4x4 texel blocks packs thousands of small marching-cubes charts
    # markedly faster (26 s instead of 37-41 s for 100k faces here) at equal utilisation.
    pack.blockAlign = True
    charts = xatlas.ChartOptions()
    charts.max_boundary_length = CHART_BOUNDARY_EDGES * _mean_edge_length(mesh)
    if quick:
        charts.max_iterations = QUICK_GROWING_PASSES
        pack.rotate_charts = False
    atlas.generate(charts, pack)
    vertex_map, faces, uv = atlas[0]
    # xatlas packs charts against the atlas border; a viewer sampling with REPEAT wrapping
    # (glTF's default) would blend in the opposite edge there, so keep a border free.
    border = ATLAS_BORDER_TEXELS / resolution
    uv = border + uv * (1.0 - 2.0 * border)
    return vertex_map, faces.astype(np.int64), uv.astype(np.float32), int(atlas.chart_count)


def _mean_edge_length(mesh: trimesh.Trimesh) -> float:
    """Mean length of the faces' edges: the mesh's own scale, whatever its units."""
    corners = np.asarray(mesh.vertices)[np.asarray(mesh.faces)]
    return float(np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2).mean())


def _texel_positions(
    vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, resolution: int
) -> tuple[np.ndarray, np.ndarray]:
    """Surface point under each covered texel centre, and the [R, R] mask of covered texels."""
    # Image row 0 is the top of the texture while UV v points up, hence the flip.
    uv_pixels = torch.from_numpy(
        np.stack([uv[:, 0] * resolution, (1.0 - uv[:, 1]) * resolution, np.zeros(len(uv))], axis=1)
    ).float()
    faces_t = torch.from_numpy(faces)
    fragments = rasterize(uv_pixels, faces_t, resolution, resolution, margin=EDGE_MARGIN_TEXELS)
    positions = interpolate(fragments, faces_t, torch.from_numpy(vertices))
    mask = fragments.covered
    return positions[mask].numpy(), mask.numpy()


def _query_colors(
    color_at: Callable[[np.ndarray], np.ndarray], points: np.ndarray, report: Callable[[float], None]
) -> np.ndarray:
    colors = np.empty((len(points), 3), dtype=np.float32)
    for start in range(0, len(points), QUERY_CHUNK):
        stop = start + QUERY_CHUNK
        colors[start:stop] = np.asarray(color_at(points[start:stop]), dtype=np.float32)
        report(min(stop, len(points)) / max(len(points), 1))
    return colors


def _fill_from_nearest(image: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Give every empty texel the colour of the nearest baked texel (dilation to the whole atlas)."""
    if not filled.any():
        return image
    _, (rows, cols) = ndimage.distance_transform_edt(~filled, return_indices=True)
    return image[rows, cols]
