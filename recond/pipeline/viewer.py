"""Write the result folder's index.html: a self-contained WebGL2 viewer with download links.

Everything the page needs (script, mesh arrays, texture) is embedded, because browsers
refuse to fetch neighbouring files from a page opened as file:// and results are often
opened straight from a shared folder.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path
from urllib.parse import quote

import numpy as np
import trimesh
from PIL import Image

from recond.pipeline.appearance import bounding_sphere, surface_color, vertex_normals
from recond.pipeline.names import VIDEO_NAME, VIEWER_NAME

TEXTURE_JPEG_QUALITY = 95  # the page only displays the texture; the PNG stays in the downloads
PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


def write_viewer(
    result_dir: Path,
    mesh: trimesh.Trimesh,
    files: list[str],
    title: str,
    video: str | None = VIDEO_NAME,
) -> Path:
    """Write result_dir/index.html showing `mesh` (+Y up) and linking every name in `files`."""
    result_dir = Path(result_dir)
    assets = Path(__file__).with_name("viewer_assets")
    values = {
        "TITLE": html.escape(title),
        "FACTS": f"{len(mesh.faces):,} triangles · {len(mesh.vertices):,} vertices",
        "FALLBACK": _fallback(video),
        "FILES": "".join(_file_item(result_dir, name) for name in files),
        # "</" inside a script element would end it early; JSON allows escaping the slash.
        "MESH_DATA": json.dumps(_mesh_payload(mesh)).replace("</", "<\\/"),
        "VIEWER_JS": (assets / "viewer.js").read_text(encoding="utf-8"),
    }
    template = (assets / "index.html").read_text(encoding="utf-8")
    # One pass, so text substituted in (a title, the script) is never scanned for placeholders.
    page = PLACEHOLDER.sub(lambda match: values[match.group(1)], template)
    path = result_dir / VIEWER_NAME
    path.write_text(page, encoding="utf-8")
    return path


def _mesh_payload(mesh: trimesh.Trimesh) -> dict:
    """Typed arrays as base64 (little-endian, as every WebGL platform reads them)."""
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    center, radius = bounding_sphere(vertices)
    index_type = "uint16" if len(vertices) <= 0xFFFF else "uint32"
    payload = {
        "positions": _b64(vertices.astype("<f4")),
        "normals": _b64(np.round(vertex_normals(vertices, faces) * 127).astype(np.int8)),
        "indices": _b64(faces.astype("<u2" if index_type == "uint16" else "<u4")),
        "index_type": index_type,
        "center": [float(c) for c in center],
        "radius": radius,
    }
    color = surface_color(mesh)
    if color.texture is not None and color.uv is not None:
        payload["uvs"] = _b64(color.uv.astype("<f4"))
        payload["texture"] = _b64_jpeg(color.texture)
        payload["texture_type"] = "image/jpeg"
    elif color.vertex_colors is not None:
        payload["colors"] = _b64(np.round(color.vertex_colors * 255).astype(np.uint8))
    return payload


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _b64_jpeg(image: Image.Image) -> str:
    buffer = io.BytesIO()
    # No chroma subsampling: 4:2:0 would average colours across neighbouring atlas charts and
    # blotch the seams.
    image.save(buffer, format="JPEG", quality=TEXTURE_JPEG_QUALITY, subsampling=0)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _file_item(result_dir: Path, name: str) -> str:
    path = result_dir / name
    size = f'<span class="size">{_human_size(path.stat().st_size)}</span>' if path.is_file() else ""
    return f'<li><a href="{quote(name)}" download>{html.escape(name)}</a>{size}</li>'


def _fallback(video: str | None) -> str:
    """What the page shows instead of the 3D view when the browser has no WebGL2."""
    if video is None:
        return "<p>This browser cannot show the 3D view (WebGL2 is unavailable).</p>"
    # preload="none": the video is only fetched when the fallback is actually shown.
    return (
        "<p>This browser cannot show the 3D view (WebGL2 is unavailable); here is the turntable instead.</p>"
        f'<video src="{quote(video)}" preload="none" loop muted playsinline controls></video>'
    )


def _human_size(n_bytes: int) -> str:
    if n_bytes < 1024:
        return f"{n_bytes} B"
    if n_bytes < 1024**2:
        return f"{n_bytes / 1024:.1f} KB"
    return f"{n_bytes / 1024**2:.1f} MB"
