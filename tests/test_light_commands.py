"""`reconctl status`, `jobs`, `show` and `retry` never load the heavy stack (torch, the meshing and
background libraries): each runs in a real, fresh Python process against a real job database,
and the process reports which modules it ended up importing.

How fast they answer is measured in benchmarks/, not asserted here; this is what keeps it fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import settings_for
from recond.store import Store

HEAVY_MODULES = ("torch", "trimesh", "rembg", "onnxruntime", "cv2", "xatlas", "mcubes")

# Runs reconctl as its console script does, then reports the heavy modules it imported.
RUN_RECONCTL = f"""
import json, sys
from recond.cli import main
sys.argv = ["reconctl", *sys.argv[1:]]
try:
    main()
except SystemExit as stop:
    code = stop.code or 0
heavy = [name for name in {HEAVY_MODULES!r} if name in sys.modules]
print(json.dumps({{"exit_code": code, "heavy": heavy}}))
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """An installation whose database holds one failed job, its file kept in inbox/failed/."""
    settings = settings_for(tmp_path)
    path = tmp_path / "recond.toml"
    path.write_text(f'inbox = "{settings.inbox}"\noutbox = "{settings.outbox}"\n'
                    f'state_dir = "{settings.state_dir}"\n')
    kept = settings.inbox / "failed" / "a.jpg"
    kept.parent.mkdir()
    kept.write_bytes(b"picture bytes")
    store = Store(settings.db_path)
    job, _ = store.enqueue("a.jpg", "aa", 13, "t_a")
    store.claim_next()
    store.fail(job.id, "a.jpg is not a picture", kept_at=kept)
    store.close()
    return path


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["jobs"], ["show", "1"],
                                     ["retry", "1"]], ids=" ".join)
def test_command_answers_without_importing_the_heavy_stack(config: Path, command: list[str]) -> None:
    completed = subprocess.run([sys.executable, "-c", RUN_RECONCTL, "--config", str(config), *command],
                               capture_output=True, text=True, timeout=60, check=True)
    report = json.loads(completed.stdout.splitlines()[-1])
    assert report["exit_code"] == 0, completed.stdout + completed.stderr
    assert report["heavy"] == []
    if command[0] == "retry":
        assert (config.parent / "inbox" / "a.jpg").read_bytes() == b"picture bytes"
