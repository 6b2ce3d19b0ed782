"""The Khronos glTF validator (node, tools/node) run on a GLB: its report, for the export tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest


from helpers.paths import REPO


VALIDATOR_SCRIPT = REPO / "tests" / "helpers" / "gltf_validate.mjs"
NODE_MODULES = REPO / "tools" / "node" / "node_modules"
def validate_glb(path: Path) -> dict:
    """The Khronos glTF validator's report for one GLB (via node and tests/gltf_validate.mjs)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the glTF validator needs it")
    if not (NODE_MODULES / "gltf-validator").is_dir():
        pytest.skip(f"gltf-validator not installed in {NODE_MODULES} (.ci/run installs it)")
    completed = subprocess.run([node, str(VALIDATOR_SCRIPT), str(path)], capture_output=True,
                               text=True, timeout=60, env={**os.environ, "NODE_PATH": str(NODE_MODULES)})
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)
