"""Shared fixtures and helpers: the tiny checkpoint, ../shared, waiting, and settings in tmp_path.

The tiny random-weight TripoSR checkpoint is built by ``recond.triposr.tiny`` (importable, so the
benchmarks use the same one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.paths import SHARED
from helpers.settings import settings_for
from recond.config import Settings
from recond.triposr.tiny import build_tiny_checkpoint

# The Ray tests' fixtures (a cluster started as docs/ray.md says, a daemon on it) for every folder.
pytest_plugins = ["helpers.ray_cluster"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on this test's own folders (helpers.settings.settings_for)."""
    return settings_for(tmp_path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight TripoSR checkpoint folder (official layout); meshes are non-empty."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_triposr"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the repository (goldens, example pictures); skips when absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared reference material not found at {SHARED}")
    return SHARED


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder uid 65534 can reach (pytest's tmp_path lies under a 0700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="recond-lost-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``--numprocesses=auto`` (pyproject.toml): one worker more than the CPUs this process may
    use. A good part of the suite waits on its daemons (a stage limit, a lock held 65 s, a
    cluster starting), and a third worker on 2 cores fills those waits: 6 min 16 s for a fresh
    clone on stop 35's VM. A fourth was faster there (5 min 32 s to 5 min 52 s) but in 3 of 8
    full runs a Ray test failed under it: the raylet's loss seen only when Ray ended the daemon,
    29-30 s after the kill, and once a daemon aborted (-6) on SIGTERM; none in the runs with
    three (docs/development.md, stop 35). --maxprocesses still caps it."""
    return len(os.sched_getaffinity(0)) + 1


# The longest modules of a full run (wall seconds on the 2-core VM: the Ray module ~300, liveness
# ~175, workflows ~145, first run ~110, host stops ~100, then 80 to 35), longest first. xdist's
# loadfile hands out whole modules in collection order (with --no-loadscope-reorder, pyproject.toml:
# by default xdist re-sorts them by their number of tests, which put the 67 quick web attacks
# first and the heartbeat's 67 s wait last, stop 34's probe); started first, none of them is the
# last thing one worker runs while the others have nothing left. The heartbeat test mostly
# waits (3 CPU-s in 67 s), so it goes early, beside the daemons that need the CPUs.
LONGEST_FIRST = (
    "executors/test_ray_executor.py", "end_to_end/test_liveness.py", "end_to_end/test_workflows_e2e.py",
    "test_heartbeat.py", "end_to_end/test_first_run.py", "executors/test_host_stop.py",
    "end_to_end/test_nothing_lost.py", "end_to_end/test_daemon_e2e.py", "executors/test_executors.py",
    "executors/test_ray_loss.py", "executors/test_status_of_parts.py", "web/test_web_e2e.py",
    "end_to_end/test_two_daemons_one_inbox.py", "inbox/test_watching.py", "web/test_web_attacks.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules of LONGEST_FIRST first, in its order; the rest after, as collected (a stable
    sort: each module's own tests keep their order)."""
    rank = {module: place for place, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0].removeprefix("tests/"), len(rank)))

