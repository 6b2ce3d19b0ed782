"""The package type-checks clean with mypy (settings in pyproject.toml, [tool.mypy]).

Run here so that `python -m pytest` is the one command that checks everything; the cache in
.mypy_cache makes repeat runs take a few seconds. mypy comes with the test extra (.[test]).
"""

from __future__ import annotations

import subprocess
import sys

from helpers.paths import REPO


def test_package_type_checks_clean() -> None:
    completed = subprocess.run([sys.executable, "-m", "mypy", "--no-color-output"], cwd=REPO,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.startswith("Success: no issues found")
