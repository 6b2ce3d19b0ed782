"""Export stage: the oriented mesh leaves as OBJ (+MTL +texture), STL and GLB that other tools
read back the same way up, and a GLB the Khronos glTF validator accepts without errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from recond.pipeline.export import export_meshes, orient_y_up
from recond.pipeline.texture import bake_texture

from helpers.gltf import validate_glb
TEXTURE_SIZE = 128
MESH_FILES = ("mesh.obj", "mesh.stl", "mesh.glb")


def colour_field(points: np.ndarray) -> np.ndarray:
    """A smooth colour that differs along every axis, so a misplaced texel shows."""
    return np.clip(points * 0.5 + 0.5, 0.0, 1.0).astype(np.float32)


def lopsided_blob() -> trimesh.Trimesh:
    """A z-up ellipsoid, tallest along z and off-centre, so each axis has distinct bounds."""
    blob = trimesh.creation.icosphere(subdivisions=2)
    blob.apply_scale((0.3, 0.5, 0.8))
    blob.apply_translation((0.1, -0.05, 0.15))
    return blob


@pytest.fixture(scope="module")
def textured_blob() -> trimesh.Trimesh:
    return bake_texture(lopsided_blob(), colour_field, TEXTURE_SIZE)[0]


@pytest.fixture(scope="module")
def coloured_blob() -> trimesh.Trimesh:
    blob = lopsided_blob()
    blob.visual.vertex_colors = np.round(colour_field(blob.vertices) * 255).astype(np.uint8)
    return blob


def load_mesh(path: Path) -> trimesh.Trimesh:
    return trimesh.load(path, force="mesh")


def test_orient_y_up_turns_z_up_into_y_up() -> None:
    mesh = lopsided_blob()
    oriented = orient_y_up(mesh)
    x, y, z = mesh.vertices.T
    assert np.allclose(oriented.vertices, np.column_stack([x, z, -y]))
    assert oriented.extents[1] == pytest.approx(mesh.extents[2])  # the tall axis is now Y
    assert np.allclose(mesh.vertices, np.column_stack([x, y, z]))  # the input is left alone


def test_orient_y_up_keeps_the_surface_facing_outwards() -> None:
    oriented = orient_y_up(lopsided_blob())
    assert oriented.is_winding_consistent and oriented.volume > 0


def test_textured_export_writes_obj_with_uvs_material_and_texture(tmp_path: Path, textured_blob) -> None:
    written = export_meshes(orient_y_up(textured_blob), tmp_path)
    assert set(written) == {"mesh.obj", "mesh.mtl", "mesh_texture.png", "mesh.stl", "mesh.glb"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written)

    obj_lines = (tmp_path / "mesh.obj").read_text().splitlines()
    assert "mtllib mesh.mtl" in obj_lines
    assert any(line.startswith("usemtl ") for line in obj_lines)
    assert sum(line.startswith("vt ") for line in obj_lines) == len(textured_blob.vertices)
    assert "map_Kd mesh_texture.png" in (tmp_path / "mesh.mtl").read_text().splitlines()
    assert Image.open(tmp_path / "mesh_texture.png").size == (TEXTURE_SIZE, TEXTURE_SIZE)


@pytest.mark.parametrize("name", ["mesh.obj", "mesh.glb"])
def test_textured_export_reads_back_with_the_baked_colours(tmp_path: Path, textured_blob, name: str) -> None:
    export_meshes(orient_y_up(textured_blob), tmp_path)
    loaded = load_mesh(tmp_path / name)
    assert loaded.visual.kind == "texture"
    sampled = loaded.visual.to_color().vertex_colors[:, :3] / 255.0
    x, y, z = loaded.vertices.T
    expected = colour_field(np.column_stack([x, -z, y]))  # back to the z-up frame it was baked in
    assert np.abs(sampled - expected).mean() < 0.05


@pytest.mark.parametrize("blob", ["textured_blob", "coloured_blob"])
def test_obj_stl_and_glb_agree_on_size_and_orientation(tmp_path: Path, blob: str, request) -> None:
    oriented = orient_y_up(request.getfixturevalue(blob))
    export_meshes(oriented, tmp_path)
    for name in MESH_FILES:
        loaded = load_mesh(tmp_path / name)
        assert len(loaded.faces) == len(oriented.faces), name
        assert np.allclose(loaded.bounds, oriented.bounds, atol=1e-5), name
    assert np.argmax(load_mesh(tmp_path / "mesh.glb").extents) == 1  # the tall axis is +Y


def test_vertex_coloured_export_keeps_colours_and_writes_no_texture(tmp_path: Path, coloured_blob) -> None:
    oriented = orient_y_up(coloured_blob)
    written = export_meshes(oriented, tmp_path)
    assert written == ["mesh.obj", "mesh.stl", "mesh.glb"]
    assert "map_Kd" not in (tmp_path / "mesh.obj").read_text()
    for name in ("mesh.obj", "mesh.glb"):
        loaded = load_mesh(tmp_path / name)
        assert loaded.visual.kind == "vertex", name
        assert np.allclose(loaded.vertices, oriented.vertices, atol=1e-6), name  # same order
        difference = (loaded.visual.vertex_colors[:, :3].astype(int)
                      - oriented.visual.vertex_colors[:, :3].astype(int))
        assert np.abs(difference).max() <= 1, name


@pytest.mark.parametrize("blob", ["textured_blob", "coloured_blob"])
def test_glb_passes_the_khronos_validator(tmp_path: Path, blob: str, request) -> None:
    export_meshes(orient_y_up(request.getfixturevalue(blob)), tmp_path)
    report = validate_glb(tmp_path / "mesh.glb")
    errors = [m for m in report["issues"]["messages"] if m["severity"] == 0]
    assert report["issues"]["numErrors"] == 0, errors
    assert report["info"]["version"] == "2.0"
    assert report["info"]["drawCallCount"] == 1
