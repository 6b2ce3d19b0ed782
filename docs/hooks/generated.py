"""mkdocs hook: the pages that would drift if written by hand are filled in from the code itself.

A page holds a marker such as ``<!-- generated: settings -->``; at build time it is replaced by
a table made from recond/config.py's Fields (their descriptions, defaults and bounds), from
each module's docstring, or from the layers in tests/test_layering.py. The code is read, not
run (ast), except the settings, which pydantic itself describes; nothing heavy is imported, so
the docs extra alone builds the site.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "recond"
LAYERING_TEST = ROOT / "tests" / "test_layering.py"


CODE_SPAN = re.compile(r"(``?)(.+?)\1")


def markdown_text(text: str) -> str:
    """Docstring or description words as a table cell shows them: code spans (reST's ``x`` or
    Markdown's `x`) kept as code, and elsewhere no HTML tags, emphasis or column breaks."""
    cell, start = [], 0
    for span in CODE_SPAN.finditer(text):
        cell += [plain_text(text[start:span.start()]), f"`{span.group(2)}`"]
        start = span.end()
    return "".join(cell + [plain_text(text[start:])])


def plain_text(text: str) -> str:
    for plain, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"),
                           ("*", "\\*"), ("_", "\\_")):
        text = text.replace(plain, escaped)
    return text


def toml_value(value: Any) -> str:
    """A default as one would write it in recond.toml."""
    if value is None:
        return "unset"
    if isinstance(value, Path):
        value = str(value)
    return "`" + (json.dumps(value) if not isinstance(value, bool) else str(value).lower()) + "`"


def bounds(field: Any) -> str:
    """The limits pydantic checks for a Field (gt, ge, le, lt, min_length), in words."""
    words = []
    for rule in field.metadata:
        for name, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            if getattr(rule, name, None) is not None:
                words.append(f"{sign} {getattr(rule, name)}")
        if getattr(rule, "min_length", None):
            words.append(f"at least {rule.min_length} characters")
    return ", ".join(words)


def settings_tables() -> str:
    sys.path.insert(0, str(ROOT))
    from recond.config import ENV_PREFIX, PARTS

    sections = []
    for part in PARTS:
        title = part.__name__.removesuffix("Settings")
        summary = " ".join((part.__doc__ or "").split())
        rows = ["| Key and variable | Default and bounds | Meaning |", "|---|---|---|"]
        for name, field in part.model_fields.items():
            default = field.default if field.default_factory is None else field.default_factory()
            allowed = markdown_text(bounds(field))
            rows.append(f"| `{name}`<br>`{ENV_PREFIX}{name.upper()}` | {toml_value(default)}"
                        f"{'<br>' + allowed if allowed else ''} | "
                        f"{markdown_text(field.description or '')} |")
        sections.append(f"### {title}\n\n{markdown_text(summary)}\n\n" + "\n".join(rows))
    return "\n\n".join(sections)


def layers() -> list[tuple[str, tuple[str, ...]]]:
    """LAYERS as tests/test_layering.py writes it down (read, not imported: it needs pytest)."""
    tree = ast.parse(LAYERING_TEST.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "LAYERS":
            assert node.value is not None
            return [(name, tuple(prefixes)) for name, prefixes in ast.literal_eval(node.value)]
    raise LookupError(f"no LAYERS in {LAYERING_TEST}")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def first_sentence(path: Path) -> str:
    """The module docstring's first sentence: the one STYLE.md asks to say what it is for."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    paragraph = " ".join(docstring.split("\n\n")[0].split())
    if not paragraph:
        raise ValueError(f"{path.relative_to(ROOT)} has no docstring (STYLE.md habit 1)")
    end = 0
    while True:
        end = paragraph.find(". ", end) + 1
        if end == 0:
            return paragraph
        if not paragraph[:end].endswith(("e.g.", "i.e.", "etc.")) and paragraph[end + 1:end + 2].isupper():
            return paragraph[:end]


def layer_of(name: str, known: list[tuple[str, tuple[str, ...]]]) -> int:
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(known)
               for prefix in prefixes if name == prefix or name.startswith(prefix + ".")]
    if not matches:
        raise LookupError(f"{name} belongs to no layer in {LAYERING_TEST.name}")
    return max(matches)[1]


def module_map() -> str:
    known = layers()
    grouped: dict[int, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        grouped.setdefault(layer_of(module_name(path), known), []).append(path)
    sections = []
    for index, (title, _) in enumerate(known):
        rows = ["| Module | What it owns |", "|---|---|"]
        rows += [f"| `{path.relative_to(ROOT)}` | {markdown_text(first_sentence(path))} |"
                 for path in grouped.get(index, [])]
        sections.append(f"### {index + 1}. {title[0].upper()}{title[1:]}\n\n" + "\n".join(rows))
    return "\n\n".join(sections)


def layering() -> str:
    rows = ["| Layer (lowest first) | Modules and packages |", "|---|---|"]
    rows += [f"| {index + 1}. {title} | " + ", ".join(f"`{prefix}`" for prefix in prefixes) + " |"
             for index, (title, prefixes) in enumerate(layers())]
    return "\n".join(rows)


MARKERS = {
    "<!-- generated: settings -->": settings_tables,
    "<!-- generated: modules -->": module_map,
    "<!-- generated: layers -->": layering,
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
