"""The manual builds with `mkdocs build --strict`, and its generated pages say what the code says.

A strict build fails on a broken link between pages, a page missing from the nav, or a hook that
raises (docs/hooks/generated.py fills the configuration and architecture pages from the code).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from html import unescape
from pathlib import Path

import pytest

from recond.config import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="mkdocs-material is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                           cwd=REPO, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr[-3000:]
    return out


def page_text(site: Path, page: str) -> str:
    """A built page's words, without tags, as a reader sees them."""
    html = (site / page / "index.html").read_text(encoding="utf-8")
    return unescape(re.sub(r"<[^>]+>", "", html))


def test_every_module_of_the_package_is_on_the_architecture_page(site: Path) -> None:
    text = page_text(site, "architecture")
    modules = sorted(path.relative_to(REPO).as_posix() for path in (REPO / "recond").rglob("*.py"))
    assert [module for module in modules if module not in text] == []
    listed = set(re.findall(r"recond/[\w/]+\.py", text))
    assert sorted(listed - set(modules)) == []  # nothing listed that does not exist


def test_the_architecture_page_shows_each_modules_own_first_sentence(site: Path) -> None:
    text = " ".join(page_text(site, "architecture").split())
    docstring = ast.get_docstring(ast.parse((REPO / "recond" / "worker.py").read_text()))
    assert docstring is not None
    first_paragraph = " ".join(docstring.split("\n\n")[0].split())  # one sentence there
    assert f"recond/worker.py {first_paragraph}" in text


def test_every_setting_is_on_the_configuration_page_with_its_variable_and_description(site: Path) -> None:
    text = " ".join(page_text(site, "configuration").split())
    missing = [name for name, field in Settings.model_fields.items()
               if f"{ENV_PREFIX}{name.upper()}" not in text
               or " ".join((field.description or "?").replace("`", "").split()) not in text]
    assert missing == []


def test_every_dependency_is_on_the_licences_page() -> None:
    """docs/licences.md is printed by scripts/licences.py; a dependency added to pyproject.toml
    without a new table there fails here."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"]) + [requirement for extra in project["optional-dependencies"].values()
                                              for requirement in extra if not requirement.startswith("recond")]
    names = {re.split(r"[\[<>=~! ;]", requirement, maxsplit=1)[0] for requirement in wanted}
    page = (REPO / "docs" / "licences.md").read_text(encoding="utf-8").lower()
    normal = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    listed = {normal(row.split("|")[1].strip()) for row in page.splitlines() if row.startswith("| ")}
    assert sorted(normal(name) for name in names if normal(name) not in listed) == []
