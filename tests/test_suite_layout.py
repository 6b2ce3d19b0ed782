"""The suite's own plan holds: under the project's pytest options (pyproject.toml's addopts), a
module's tests run on one xdist worker, so its module-scoped fixtures (bench_chair's results, a
web server, a Ray cluster) are made once. It broke silently once: with pytest 9.2, xdist 3.8's
``--dist=loadgroup`` no longer saw the groups and spread every module over all workers.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from helpers.paths import REPO

TESTS_PER_MODULE = 6


def test_each_module_runs_on_one_worker_under_the_projects_options(tmp_path: Path) -> None:
    modules = []
    for name in ("alpha", "beta"):
        module = tmp_path / f"test_{name}.py"
        # A short sleep each, so a scheduler that balances single tests would spread them.
        module.write_text("import time\n\n" + "".join(
            f"def test_{index}():\n    time.sleep(0.1)\n\n" for index in range(TESTS_PER_MODULE)))
        modules.append(module)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path),
         "-p", "no:cacheprovider", "-n", "2", "-v", *map(str, modules)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    workers: dict[str, set[str]] = defaultdict(set)
    for worker, module in re.findall(r"\[(gw\d+)\][^\n]*?PASSED[^\n]*?(test_\w+)\.py::", run.stdout):
        workers[module].add(worker)
    assert sorted(workers) == ["test_alpha", "test_beta"], run.stdout[-3000:]
    assert all(len(found) == 1 for found in workers.values()), dict(workers)


def test_the_longest_modules_named_to_start_first_exist() -> None:
    from conftest import LONGEST_FIRST

    assert [module for module in LONGEST_FIRST if not (REPO / "tests" / module).is_file()] == []
