"""The package's imports run one way: down the layers below, never back up, and never in a circle.

The layers follow the data's journey (../shared/STYLE.md, issue 24). A module may import from its
own layer and the layers under it; function-level imports count as much as top-level ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "recond"

# Lowest first. A name stands for the module or the package with that dotted prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("shared facts", ("recond", "recond.config", "recond.errors", "recond.logging", "recond.names")),
    ("the share's folders", ("recond.shares",)),
    ("the model port", ("recond.triposr",)),
    ("the pipeline's stages", ("recond.pipeline",)),
    ("the job store", ("recond.store",)),
    ("the outbox wing", ("recond.outbox",)),
    ("the inbox wing", ("recond.inbox",)),
    ("workflows around each job", ("recond.workflows",)),
    ("executors", ("recond.executors",)),
    ("the worker", ("recond.worker",)),
    ("facts for the front ends", ("recond.heartbeat", "recond.status", "recond.doctor")),
    ("front ends", ("recond.daemon", "recond.cli", "recond.web")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The recond modules ``name`` imports, anywhere in its body (``from recond.x import y``
    counts as recond.x.y when that is a module)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def layer_of(name: str) -> int:
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS)
               for prefix in prefixes if name == prefix or name.startswith(prefix + ".")]
    if not matches:
        pytest.fail(f"{name} belongs to no layer: add it to LAYERS in {Path(__file__).name}")
    return max(matches)[1]


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported(name, path, known) for name, path in found.items()}


def test_every_module_belongs_to_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_no_import_runs_back_up_a_layer() -> None:
    upward = [f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
              for name, targets in import_graph().items() for target in sorted(targets)
              if layer_of(target) > layer_of(name)]
    assert upward == []


def test_no_import_circle() -> None:
    graph = import_graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            pytest.fail("import circle: " + " -> ".join(path[path.index(name):] + [name]))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_at_most_twelve_modules_sit_flat_in_the_package() -> None:
    flat = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(flat) <= 12, flat


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The graph reads function-level imports too: a store that imported the worker inside a
    function would be caught."""
    module = tmp_path / "store.py"
    module.write_text("def later():\n    from recond.worker import Worker\n")
    assert imported("recond.store", module, {"recond.store", "recond.worker"}) == {"recond.worker"}
    assert layer_of("recond.worker") > layer_of("recond.store")


@pytest.mark.parametrize("name", ["recond.outbox.gallery", "recond.web.app", "recond.web.pages",
                                  "recond.pipeline.viewer", "recond.triposr.config"])
def test_every_file_a_module_names_beside_itself_is_there(name: str) -> None:
    """A module that reads a file by its own path (``Path(__file__)...``) still finds it after a
    move: the moves of issue 24 first left the gallery looking for its style sheet in the wrong
    folder."""
    import importlib

    module = importlib.import_module(name)
    paths = [value for value in vars(module).values()
             if isinstance(value, Path) and value.is_relative_to(PACKAGE)]
    assert [path for path in paths if not path.exists()] == []
