"""The file names inside a result folder: a contract with the people and scripts that read it.

One owner for each name, imported by the stages that write the files, the viewer that links
them and the CLI that talks about them. Light on purpose (no imports), so anything can use it.
"""

from __future__ import annotations

SOURCE_STEM = "source"  # the original picture's bytes, as source.<its extension>
INPUT_NAME = "input.png"  # the cut-out, framed picture the model saw
OBJ_NAME = "mesh.obj"
MTL_NAME = "mesh.mtl"
TEXTURE_STEM = "mesh_texture"  # trimesh names the texture file after the material
TEXTURE_NAME = f"{TEXTURE_STEM}.png"
STL_NAME = "mesh.stl"
GLB_NAME = "mesh.glb"
FRAME_PREFIX = "render_"  # turntable frames render_000.png, render_001.png, ...
VIDEO_NAME = "render.mp4"
VIEWER_NAME = "index.html"
RECORD_NAME = "job.json"


def source_copy_name(suffix: str) -> str:
    """source.<ext> for a picture named with ``suffix`` (lower-cased; .bin when it has none)."""
    return f"{SOURCE_STEM}{suffix.lower() or '.bin'}"


def frame_name(index: int) -> str:
    return f"{FRAME_PREFIX}{index:03d}.png"
