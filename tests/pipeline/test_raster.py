"""The shared triangle rasteriser: coverage, barycentrics and the depth test."""

import math

import torch
import trimesh

from recond.pipeline.raster import interpolate, rasterize


def _square(x0: float, y0: float, x1: float, y1: float, depth: float = 0.0):
    vertices = torch.tensor(
        [[x0, y0, depth], [x1, y0, depth], [x1, y1, depth], [x0, y1, depth]], dtype=torch.float32
    )
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    return vertices, faces


def test_large_square_covers_exactly_the_pixel_centres_inside_it():
    vertices, faces = _square(10.3, 20.6, 230.2, 250.4)
    fragments = rasterize(vertices, faces, 256, 256)
    rows, cols = torch.meshgrid(torch.arange(256) + 0.5, torch.arange(256) + 0.5, indexing="ij")
    inside = (cols > 10.3) & (cols < 230.2) & (rows > 20.6) & (rows < 250.4)
    assert torch.equal(fragments.covered, inside)
    assert set(fragments.face_id[inside].unique().tolist()) == {0, 1}


def test_barycentrics_reproduce_the_pixel_centre():
    vertices = torch.tensor([[3.0, 2.0, 0.0], [60.0, 10.0, 0.0], [20.0, 55.0, 0.0]])
    faces = torch.tensor([[0, 1, 2]])
    fragments = rasterize(vertices, faces, 64, 64)
    position = interpolate(fragments, faces, vertices[:, :2])
    rows, cols = torch.nonzero(fragments.covered, as_tuple=True)
    expected = torch.stack([cols + 0.5, rows + 0.5], dim=-1).float()
    assert len(rows) > 500
    assert torch.allclose(position[rows, cols], expected, atol=1e-3)
    assert torch.allclose(fragments.bary[rows, cols].sum(-1), torch.ones(len(rows)), atol=1e-5)


def test_nearer_triangle_wins_whatever_the_drawing_order():
    far_vertices, far_faces = _square(0, 0, 32, 32, depth=5.0)
    near_vertices, near_faces = _square(8, 8, 24, 24, depth=1.0)
    for first, second in [((far_vertices, far_faces), (near_vertices, near_faces)),
                          ((near_vertices, near_faces), (far_vertices, far_faces))]:
        vertices = torch.cat([first[0], second[0]])
        faces = torch.cat([first[1], second[1] + 4])
        fragments = rasterize(vertices, faces, 32, 32)
        assert fragments.depth[16, 16] == 1.0
        assert fragments.depth[2, 2] == 5.0
        assert fragments.covered.all()


def test_offscreen_and_degenerate_triangles_cover_nothing():
    vertices = torch.tensor(
        [[-50.0, -50.0, 0], [-10.0, -50.0, 0], [-10.0, -10.0, 0], [5.0, 5.0, 0], [9.0, 9.0, 0], [20.0, 20.0, 0]]
    )
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    fragments = rasterize(vertices, faces, 32, 32)
    assert not fragments.covered.any()
    assert torch.isinf(fragments.depth).all()


def test_dense_sphere_covers_its_disc_without_holes():
    sphere = trimesh.creation.icosphere(subdivisions=6)  # 81920 faces, most smaller than a pixel
    points = torch.tensor(sphere.vertices, dtype=torch.float32)
    size, scale = 256, 0.45
    screen = torch.stack(
        [(0.5 + scale * points[:, 0]) * size, (0.5 - scale * points[:, 1]) * size, -points[:, 2]], dim=-1
    )
    fragments = rasterize(screen, torch.tensor(sphere.faces), size, size)
    coverage = fragments.covered.float().mean().item()
    assert abs(coverage - math.pi * scale**2) < 0.01
    # Every visible pixel shows a front-facing triangle (the z-buffer hid the back half).
    front = torch.tensor(sphere.face_normals[:, 2] > -0.05)
    assert front[fragments.face_id[fragments.covered]].all()


def test_margin_grows_coverage_but_inside_pixels_keep_their_own_triangle():
    # Two triangles 3 px apart: with a 1.5 px margin each claims the gap's nearer half.
    vertices = torch.tensor(
        [[4.0, 4.0, 0], [14.0, 4.0, 0], [4.0, 28.0, 0], [17.0, 4.0, 0], [28.0, 4.0, 0], [28.0, 28.0, 0]]
    )
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    exact = rasterize(vertices, faces, 32, 32)
    grown = rasterize(vertices, faces, 32, 32, margin=1.5)
    assert grown.covered.sum() > exact.covered.sum()
    assert torch.equal(grown.face_id[exact.covered], exact.face_id[exact.covered])
    assert grown.face_id[5, 14] == 0 and grown.face_id[5, 16] == 1  # gap columns split by distance
    # Outside pixels get barycentrics clamped onto their triangle: interpolated x stays inside it.
    x = interpolate(grown, faces, vertices[:, :1])[..., 0]
    assert x[5, 14] <= 14.0 + 1e-4 and x[5, 16] >= 17.0 - 1e-4
    assert torch.all(grown.bary[grown.covered] >= 0)


def test_the_compiled_cpu_path_answers_exactly_as_the_batched_torch_one():
    """recond.pipeline.raster_cpu must decide every pixel as the batched path does (same face,
    barycentrics and depth, bit for bit), with and without the bake's margin."""
    from recond.pipeline import raster, raster_cpu

    assert raster_cpu.worth_it(raster_cpu.COMPILE_FROM_TRIANGLES), "numba is a dependency: it must compile here"
    generator = torch.Generator().manual_seed(7)
    for margin in (0.0, 1.5):
        for count in (40, 3000):
            corners = torch.rand(count * 3, 3, generator=generator) * torch.tensor([70.0, 70.0, 1.0]) - 3.0
            triangles = corners.reshape(count, 3, 3)
            batched = raster.rasterize_batched(triangles, 64, 64, margin)
            face_id, bary, depth = raster_cpu.rasterize_cpu(triangles, 64, 64, margin)
            assert batched.covered.any()
            assert torch.equal(face_id, batched.face_id)
            assert torch.equal(bary, batched.bary)
            assert torch.equal(depth, batched.depth)
