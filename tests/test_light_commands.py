"""What must stay light never loads the heavy stack (torch, the meshing and background libraries):
`reconctl status`, `jobs`, `show` and `retry`, the package ``__init__`` files, the worker and the
daemon. Each check runs in a real, fresh Python process (commands against a real job database),
which reports the heavy modules it ended up importing.

How fast the commands answer is measured in benchmarks/bench_cli.py, not asserted here; this
is what keeps them fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.settings import settings_for
from recond.store import Store

from helpers.light_imports import HEAVY_MODULES
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


def test_looking_for_the_rembg_model_file_imports_no_torch(tmp_path: Path) -> None:
    """`reconctl doctor` asks rembg_model_status where the file is; that alone must stay light."""
    script = (
        "import json, sys\n"
        "from recond.config import load_settings\n"
        "from recond.pipeline.background import rembg_model_status\n"
        f"status = rembg_model_status(load_settings(rembg_home={str(tmp_path)!r}))\n"
        f"print(json.dumps({{'found': status.available, 'torch': 'torch' in sys.modules,\n"
        f"                  'rembg': 'rembg' in sys.modules}}))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=60, check=True)
    # Not there: even rembg (1.2 CPU-s: pymatting's numba kernels) is left unimported.
    assert json.loads(completed.stdout.splitlines()[-1]) == {"found": False, "torch": False, "rembg": False}


def test_packages_errors_and_the_pipeline_contract_import_nothing_heavy() -> None:
    """The daemon starts, and the worker names its pipeline, before torch loads in the worker."""
    light = ["recond", "recond.pipeline", "recond.triposr", "recond.errors", "recond.config",
             "recond.pipeline.contract", "recond.pipeline.names", "recond.worker", "recond.daemon"]
    script = (
        "import importlib, json, sys\n"
        f"for name in {light!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps([name for name in {HEAVY_MODULES!r} if name in sys.modules]))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=60, check=True)
    assert json.loads(completed.stdout.splitlines()[-1]) == []
