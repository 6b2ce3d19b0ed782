"""recond-web's HTML pages: the upload page, a result's page and the gallery's pager.

The result page wraps the daemon's own viewer (the result folder's index.html, which also works
from the share) with what only the web has: the way back to the upload page and the gallery,
and the original photo beside the model. Every link is absolute, so the same page is served
at /results/<folder>/ and at the seed's /result/<folder>.
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

from recond.names import shown_name
from recond.pipeline.names import VIEWER_NAME
from recond.pipeline.record import read_record

HERE = Path(__file__).parent
NAV = '<a href="/">Upload</a><a href="/gallery">Gallery</a><a href="/docs">API</a>'
# Photo types every browser shows; another original (a TIFF, a HEIC) is shown as the picture
# the model saw (input.png) instead.
SHOWN_PHOTO_TYPES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".avif", ".bmp")
MODEL_INPUT = "input.png"
DOWNLOADS = (("mesh.glb", "GLB"), ("mesh.obj", "OBJ"), ("mesh.stl", "STL"), ("render.mp4", "video"))


def upload_page(presets: list[str]) -> str:
    """The upload page; with presets, a menu of them (its value goes with each upload)."""
    menu = (f'<p><label>Preset {preset_menu(presets, "upload-preset")}</label></p>'
            if presets else "")
    return (HERE / "upload.html").read_text(encoding="utf-8").replace("{{NAV}}", NAV).replace(
        "{{PRESETS}}", menu)


def preset_menu(presets: list[str], element_id: str, chosen: str | None = None) -> str:
    """A <select name="preset">: the defaults (value "") and each preset."""
    options = "".join(f'<option value="{html.escape(name)}"{" selected" if name == chosen else ""}>'
                      f"{html.escape(name)}</option>" for name in presets)
    return (f'<select id="{element_id}" name="preset"><option value="">defaults</option>'
            f"{options}</select>")


def result_page(folder: Path, source: str | None, presets: list[str]) -> str:
    """The page of one published result folder (its name is a checked outbox entry), made from
    the inbox path ``source`` (None when its job is no longer in the store), with its preset and
    a form to redo it with one of ``presets`` (issue 25)."""
    record = read_record(folder)
    name = shown_name(source or str(record.get("source") or folder.name))
    base = f"/results/{quote(folder.name)}/"
    photo = next((copy.name for copy in sorted(folder.glob("source.*"))
                  if copy.suffix.lower() in SHOWN_PHOTO_TYPES), MODEL_INPUT)
    facts = [f"{record['faces']:,} faces · "] if isinstance(record.get("faces"), int) else []
    downloads = " · ".join(f'<a href="{base}{file}" download>{label}</a>'
                           for file, label in DOWNLOADS if (folder / file).is_file())
    values = {
        "NAME": html.escape(name), "NAV": NAV, "FACTS": html.escape("".join(facts)),
        "PHOTO": f"{base}{quote(photo)}", "VIEWER": f"{base}{VIEWER_NAME}", "DOWNLOADS": downloads,
        "PRESET": html.escape(f"preset: {record.get('preset') or 'none (the defaults)'}"),
        "REDO": f"/api/results/{quote(folder.name)}/redo",
        "REDO_MENU": preset_menu(presets, "redo-preset", record.get("preset")),
    }
    page = (HERE / "result.html").read_text(encoding="utf-8")
    for key, value in values.items():
        page = page.replace("{{" + key + "}}", value)
    return page


def pager(page: int, pages: int) -> str:
    links = []
    if page > 1:
        links.append(f'<a rel="prev" href="/gallery?page={page - 1}">← Newer</a>')
    if page < pages:
        links.append(f'<a rel="next" href="/gallery?page={page + 1}">Older →</a>')
    return f'<nav class="pager">{"".join(links)}</nav>'
