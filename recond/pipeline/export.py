"""Export stage: the mesh as OBJ (+MTL +PNG), STL and GLB, all standing upright (+Y up).

TripoSR works z-up; Blender, three.js and glTF expect +Y up, and upstream run.py's files come
out lying on their side (TripoSR issue #18). We rotate once, here, and every output (files,
turntable, viewer) uses that one oriented mesh. The OBJ carries `vt`, `mtllib` and `usemtl`
and its MTL names the texture, which upstream's baked OBJ lacks (TripoSR issues #101, #142).
The STL, which has no texture, is written from the welded surface, so it is the mesh stage's
closed solid (issue 15) and not the seam-split copy the textured files need.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, Any

import numpy as np
import trimesh
from trimesh.exchange.obj import export_obj
from trimesh.visual.material import PBRMaterial, SimpleMaterial

from recond.pipeline.topology import welded
from recond.pipeline.names import GLB_NAME, MTL_NAME, OBJ_NAME, STL_NAME, TEXTURE_STEM


# (x, y, z) -> (x, z, -y): a -90 degree turn about X takes TripoSR's +Z up to +Y up.
Z_UP_TO_Y_UP = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def orient_y_up(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """A copy of a z-up mesh turned +Y up (normals and texture kept)."""
    oriented = mesh.copy(include_cache=True)
    oriented.apply_transform(Z_UP_TO_Y_UP)
    return oriented


def texture_image(mesh: trimesh.Trimesh):
    """The baked texture of a textured mesh, or None for a vertex-coloured one."""
    if mesh.visual.kind != "texture":
        return None
    material = mesh.visual.material
    return getattr(material, "image", None) or getattr(material, "baseColorTexture", None)


# zlib level of the texture PNG: level 4 encoded bench_chair's 1024 texture in 0.11 instead of
# Pillow's default 6's 0.28 CPU-s, for a file 5% larger (800 instead of 759 kB; issue 23).
TEXTURE_PNG_LEVEL = 4


class EncodedPng:
    """A texture that trimesh's OBJ and GLB writers save as PNG bytes made once.

    Both writers call ``image.save(file, format=...)``; a 1024 texture takes ~0.1 CPU-s to
    encode at TEXTURE_PNG_LEVEL, and encoding it once instead of twice saves that again (issue 23).
    Everything else (size, mode, the array a material hashes) is the image's own.
    """

    format = "PNG"

    def __init__(self, image: Any) -> None:
        self.image = image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=TEXTURE_PNG_LEVEL)
        self.data = buffer.getvalue()

    def save(self, fp: IO[bytes], format: str | None = None, **options: Any) -> None:  # noqa: A002 - PIL's name
        if (format or "png").lower() != "png" or options:
            self.image.save(fp, format=format, **options)
        else:
            fp.write(self.data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.image, name)


def export_meshes(mesh: trimesh.Trimesh, result_dir: Path) -> list[str]:
    """Write mesh.obj (+ mesh.mtl + mesh_texture.png when textured), mesh.stl, mesh.glb."""
    result_dir = Path(result_dir)
    image = texture_image(mesh)
    encoded = None if image is None else EncodedPng(image)
    written = _write_obj(mesh, result_dir, encoded)
    # The seams the OBJ and GLB need are welded shut again: the STL is the mesh stage's solid.
    (result_dir / STL_NAME).write_bytes(welded(mesh).export(file_type="stl"))
    (result_dir / GLB_NAME).write_bytes(_glb_ready(mesh, encoded).export(file_type="glb"))
    return [*written, STL_NAME, GLB_NAME]


def _write_obj(mesh: trimesh.Trimesh, result_dir: Path, image: EncodedPng | None) -> list[str]:
    if image is None:
        text = export_obj(mesh, include_normals=True, include_color=True, include_texture=False)
        (result_dir / OBJ_NAME).write_text(text, encoding="utf-8")
        return [OBJ_NAME]
    # White diffuse: many viewers multiply map_Kd by Kd, and trimesh's default Kd is 0.4 grey.
    material = SimpleMaterial(image=image, diffuse=(255, 255, 255, 255), ambient=(255, 255, 255, 255),
                              specular=(0, 0, 0, 255), name=TEXTURE_STEM)
    textured = trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, process=False,
                               vertex_normals=mesh.vertex_normals,
                               visual=trimesh.visual.TextureVisuals(uv=mesh.visual.uv, material=material))
    text, extra_files = export_obj(textured, include_normals=True, include_texture=True,
                                   return_texture=True, mtl_name=MTL_NAME)
    (result_dir / OBJ_NAME).write_text(text, encoding="utf-8")
    for name, data in extra_files.items():
        (result_dir / name).write_bytes(data)
    return [OBJ_NAME, *sorted(extra_files)]


def _glb_ready(mesh: trimesh.Trimesh, image: EncodedPng | None) -> trimesh.Trimesh:
    """A textured mesh with a plain PBR material (not metallic, fully rough), as a scan looks."""
    if image is None:
        return mesh
    material = PBRMaterial(baseColorTexture=image, metallicFactor=0.0, roughnessFactor=1.0,
                           name=TEXTURE_STEM)
    return trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, process=False,
                           vertex_normals=mesh.vertex_normals,
                           visual=trimesh.visual.TextureVisuals(uv=mesh.visual.uv, material=material))
