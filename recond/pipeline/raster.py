"""A vectorised triangle rasteriser in torch, shared by the texture bake and the turntable.

Both stages need the same answer -- which triangle covers each pixel, and where inside it --
once in UV space (texels to surface points) and once in screen space (pixels to texture
samples), so one batched rasteriser that runs on CPU and CUDA serves both without OpenGL. On
a CPU a compiled loop (recond.pipeline.raster_cpu) gives the same answer many times faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recond.pipeline import raster_cpu

# Upper bound on pixel candidates examined at once: bounds memory for huge triangles while
# keeping thousands of small triangles in one batch.
CANDIDATES_PER_BATCH = 1 << 22


@dataclass
class Fragments:
    """Per-pixel result of rasterising one triangle set; empty pixels have face_id -1."""

    face_id: torch.Tensor  # [H, W] int64, index of the nearest covering triangle or -1
    bary: torch.Tensor  # [H, W, 3] float32 screen-space barycentrics of that triangle
    depth: torch.Tensor  # [H, W] float32, +inf where empty

    @property
    def covered(self) -> torch.Tensor:
        return self.face_id >= 0


@dataclass
class _TriangleBoxes:
    """Triangles with their pixel bounding boxes, the unit the coverage test works on."""

    triangles: torch.Tensor  # [T, 3, 3] x, y in pixels, z depth
    face_ids: torch.Tensor  # [T] index of each triangle in the mesh
    col0: torch.Tensor  # [T] first column and row whose pixel centre the box can hold
    row0: torch.Tensor
    box_w: torch.Tensor  # [T] box size in pixels (<= 0 when no pixel centre falls inside)
    box_h: torch.Tensor
    area2: torch.Tensor  # [T] twice the signed area

    def select(self, index: torch.Tensor) -> _TriangleBoxes:
        return _TriangleBoxes(self.triangles[index], self.face_ids[index], self.col0[index],
                              self.row0[index], self.box_w[index], self.box_h[index],
                              self.area2[index])


@dataclass
class _Candidates:
    """Every (pixel, triangle) pair where the pixel centre is covered, before the depth test."""

    pixel: torch.Tensor  # [N] flat pixel index (row * width + col)
    face_id: torch.Tensor  # [N]
    bary: torch.Tensor  # [N, 3] barycentrics, clamped onto the triangle
    depth: torch.Tensor  # [N]
    outside: torch.Tensor  # [N] how far (pixels) the centre lies outside the triangle; 0 inside

    @staticmethod
    def concatenate(parts: list[_Candidates], device: torch.device) -> _Candidates:
        if not parts:
            empty = torch.empty(0, device=device)
            return _Candidates(empty.long(), empty.long(), empty.reshape(0, 3), empty, empty)
        return _Candidates(*(torch.cat([getattr(part, name) for part in parts])
                             for name in ("pixel", "face_id", "bary", "depth", "outside")))


def rasterize(
    vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int, margin: float = 0.0
) -> Fragments:
    """Rasterise triangles given in pixel units: x right, y down, z smaller = nearer.

    Pixel (row, col) samples the point (col + 0.5, row + 0.5). Depth must be affine in screen
    space (e.g. NDC z or -1/distance) for the interpolated z-test to be exact. Pixels on an
    edge shared by two triangles go to the nearer one (ties to the higher face id).

    With a margin, pixel centres up to `margin` pixels outside a triangle count as covered
    too, with barycentrics clamped onto the triangle; a pixel truly inside some triangle
    always prefers it. Texture baking uses this so texels that chart edges only partly
    overlap still get their own chart's colour.
    """
    triangles = vertices[faces.long()].float()  # [F, 3, 3]
    if triangles.device.type == "cpu" and raster_cpu.worth_it(len(triangles)):
        return Fragments(*raster_cpu.rasterize_cpu(triangles, height, width, margin))
    return rasterize_batched(triangles, height, width, margin)


def rasterize_batched(triangles: torch.Tensor, height: int, width: int, margin: float = 0.0) -> Fragments:
    """The batched torch rasteriser (any device; on a GPU the only one) for triangles [F, 3, 3]
    in pixel units; ``rasterize`` says what it answers."""
    return _resolve_depth(_candidates(triangles, height, width, margin), height, width)


def interpolate(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes [V, C] -> [H, W, C] (zero where empty)."""
    covered = fragments.covered
    # Only covered pixels are gathered: large textures are mostly chart interiors, but a
    # turntable frame is mostly background.
    corner_values = attributes[faces.long()[fragments.face_id[covered]]]  # [N, 3, C]
    values = attributes.new_zeros((*covered.shape, attributes.shape[-1]))
    values[covered] = (fragments.bary[covered].unsqueeze(-1) * corner_values).sum(dim=-2)
    return values


def _candidates(triangles: torch.Tensor, height: int, width: int, margin: float) -> _Candidates:
    """Every (pixel, triangle) pair where the pixel centre lies inside the (grown) triangle."""
    xy = triangles[..., :2]
    # Pixel centres sit at +0.5, so the first column a triangle can cover is ceil(min - 0.5).
    col0 = torch.ceil(xy[..., 0].amin(1) - margin - 0.5).clamp(min=0)
    col1 = torch.floor(xy[..., 0].amax(1) + margin - 0.5).clamp(max=width - 1)
    row0 = torch.ceil(xy[..., 1].amin(1) - margin - 0.5).clamp(min=0)
    row1 = torch.floor(xy[..., 1].amax(1) + margin - 0.5).clamp(max=height - 1)
    box_w = (col1 - col0 + 1).long()
    box_h = (row1 - row0 + 1).long()
    area2 = _edge(xy[:, 0], xy[:, 1], xy[:, 2])
    visible = (box_w > 0) & (box_h > 0) & (area2.abs() > 1e-12)
    boxes = _TriangleBoxes(triangles, torch.arange(len(triangles), device=triangles.device),
                           col0, row0, box_w, box_h, area2)

    # Group triangles by bounding box rounded up to powers of two: small triangles (the
    # common case) are batched together and only large ones pay for large candidate grids.
    bucket_w = _next_pow2(box_w.clamp(min=1))
    bucket_h = _next_pow2(box_h.clamp(min=1))
    bucket_key = bucket_w * (2 * max(height, width) + 1) + bucket_h
    parts = []
    for key in torch.unique(bucket_key[visible]).tolist():
        members = torch.nonzero(visible & (bucket_key == key)).squeeze(1)
        bw = int(bucket_w[members[0]])
        bh = int(bucket_h[members[0]])
        per_batch = max(1, CANDIDATES_PER_BATCH // (bw * bh))
        for batch in members.split(per_batch):
            parts.append(_cover(boxes.select(batch), bw, bh, width, margin))
    return _Candidates.concatenate(parts, triangles.device)


def _cover(boxes: _TriangleBoxes, bw: int, bh: int, width: int, margin: float) -> _Candidates:
    """Test a bw x bh candidate grid anchored at each triangle's box corner."""
    triangles, area2 = boxes.triangles, boxes.area2
    device = triangles.device
    offset_row, offset_col = torch.meshgrid(
        torch.arange(bh, device=device), torch.arange(bw, device=device), indexing="ij"
    )
    offset_row = offset_row.reshape(1, -1)
    offset_col = offset_col.reshape(1, -1)
    in_box = (offset_col < boxes.box_w[:, None]) & (offset_row < boxes.box_h[:, None])
    col = boxes.col0[:, None] + offset_col
    row = boxes.row0[:, None] + offset_row
    point = torch.stack([col + 0.5, row + 0.5], dim=-1)  # [T, K, 2]

    a, b, c = (triangles[:, i, None, :2] for i in range(3))
    # Barycentric weight of a vertex = signed area of the opposite sub-triangle / total.
    w0 = _edge(b, c, point) / area2[:, None]
    w1 = _edge(c, a, point) / area2[:, None]
    w2 = 1.0 - w0 - w1
    weights = torch.stack([w0, w1, w2], dim=-1)  # [T, K, 3]
    if margin > 0:
        # A weight times (twice the area / opposite edge length) is the distance to that edge.
        edge_length = (triangles[:, [2, 0, 1], :2] - triangles[:, [1, 2, 0], :2]).norm(dim=-1)
        edge_distance = weights * (area2.abs()[:, None] / edge_length.clamp(min=1e-12))[:, None, :]
        outside = (-edge_distance.amin(-1)).clamp(min=0)
    else:
        outside = -weights.amin(-1).clamp(max=0)
    covered = in_box & (outside <= margin)

    tri_index, cand_index = torch.nonzero(covered, as_tuple=True)
    bary = weights[tri_index, cand_index].clamp(min=0)
    bary = bary / bary.sum(-1, keepdim=True)
    depth = (bary * triangles[tri_index, :, 2]).sum(-1)
    pixel = row[tri_index, cand_index].long() * width + col[tri_index, cand_index].long()
    return _Candidates(pixel, boxes.face_ids[tri_index], bary, depth, outside[tri_index, cand_index])


def _resolve_depth(candidates: _Candidates, height: int, width: int) -> Fragments:
    """Keep, per pixel, the nearest candidate (z-buffer over the flat candidate list)."""
    pixels, face_ids, barys = candidates.pixel, candidates.face_id, candidates.bary
    depths, outside = candidates.depth, candidates.outside
    device = pixels.device
    n_pixels = height * width
    least_outside = torch.full((n_pixels,), float("inf"), device=device)
    least_outside.scatter_reduce_(0, pixels, outside, reduce="amin")
    keep = outside <= least_outside[pixels]
    pixels, face_ids, barys, depths = pixels[keep], face_ids[keep], barys[keep], depths[keep]

    zbuffer = torch.full((n_pixels,), float("inf"), device=device)
    zbuffer.scatter_reduce_(0, pixels, depths, reduce="amin")
    nearest = depths <= zbuffer[pixels]
    winner = torch.full((n_pixels,), -1, dtype=torch.long, device=device)
    winner.scatter_reduce_(0, pixels[nearest], face_ids[nearest], reduce="amax")
    chosen = nearest & (face_ids == winner[pixels])

    bary = torch.zeros((n_pixels, 3), device=device)
    bary[pixels[chosen]] = barys[chosen]
    return Fragments(
        face_id=winner.reshape(height, width),
        bary=bary.reshape(height, width, 3),
        depth=zbuffer.reshape(height, width),
    )


def _edge(a: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Twice the signed area of triangle (a, b, p)."""
    return (b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (p[..., 0] - a[..., 0])


def _next_pow2(n: torch.Tensor) -> torch.Tensor:
    return torch.pow(2, torch.ceil(torch.log2(n.double()))).long()
