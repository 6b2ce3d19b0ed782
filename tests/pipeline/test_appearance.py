"""Appearance shared by turntable and viewer: seam-free normals and the colour source."""

import numpy as np
import trimesh
from PIL import Image

from recond.pipeline.appearance import UNTEXTURED_GREY, bounding_sphere, surface_color, vertex_normals


def test_copies_of_a_point_split_at_a_seam_share_one_smooth_normal():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    # Split every vertex per face, as a UV unwrap does at its seams (here: everywhere).
    split_vertices = sphere.vertices[sphere.faces.reshape(-1)]
    split_faces = np.arange(len(split_vertices)).reshape(-1, 3)
    normals = vertex_normals(split_vertices, split_faces)
    radial = split_vertices / np.linalg.norm(split_vertices, axis=1, keepdims=True)
    assert np.abs(normals - radial).max() < 0.02


def test_texture_is_found_in_simple_and_pbr_materials():
    box = trimesh.creation.box()
    image = Image.new("RGB", (4, 4), (255, 0, 0))
    uv = np.zeros((len(box.vertices), 2))
    for material in (trimesh.visual.material.SimpleMaterial(image=image),
                     trimesh.visual.material.PBRMaterial(baseColorTexture=image)):
        box.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
        color = surface_color(box)
        assert color.texture is not None and color.texture.getpixel((0, 0)) == (255, 0, 0)
        assert color.uv.shape == (8, 2) and color.vertex_colors is None


def test_vertex_colours_are_used_and_plain_meshes_are_grey():
    box = trimesh.creation.box()
    assert np.allclose(surface_color(box).vertex_colors, UNTEXTURED_GREY)
    box.visual.vertex_colors = [0, 255, 0, 255]
    assert np.allclose(surface_color(box).vertex_colors, [0, 1, 0])


def test_bounding_sphere_holds_every_vertex():
    points = np.random.default_rng(1).normal(size=(500, 3)).astype(np.float32) + 3
    center, radius = bounding_sphere(points)
    assert np.linalg.norm(points - center, axis=1).max() <= radius + 1e-6
