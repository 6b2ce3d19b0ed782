"""Shared fixtures and helpers: the tiny checkpoint, ../shared, waiting, and settings in tmp_path.

The tiny random-weight TripoSR checkpoint is built by ``recond.triposr.tiny`` (importable, so the
benchmarks use the same one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from recond.config import Settings, load_settings
from recond.triposr.tiny import build_tiny_checkpoint

SHARED = Path(__file__).resolve().parents[1].parent / "shared"  # ../shared beside the repository
T = TypeVar("T")
# Timings that keep tests quick: files settle, polls and model retries happen within a second.
TEST_TIMINGS = {"settle_seconds": 0.4, "poll_interval": 0.2, "model_retry_seconds": 0.2}
# Jobs run whole in the worker thread unless a test asks for host processes (test_executors.py):
# a host process imports torch, seconds that most tests of the worker's bookkeeping do not need.
ONE_AT_A_TIME = {"host_workers": 0, "isolate_host_part": False}


def wait_for(condition: Callable[[], T], timeout: float = 10.0,
             tick: Callable[[], None] = lambda: None) -> T:
    """Poll ``condition`` (calling ``tick`` first each time) until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick()
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    """Settings with folders in ``tmp_path`` (inbox and outbox created), TEST_TIMINGS and
    ONE_AT_A_TIME."""
    folders = {"inbox": tmp_path / "inbox", "outbox": tmp_path / "outbox",
               "state_dir": tmp_path / "state"}
    settings = load_settings(**{**folders, **TEST_TIMINGS, **ONE_AT_A_TIME, **overrides})
    for folder in (settings.inbox, settings.outbox):
        folder.mkdir(parents=True, exist_ok=True)
    return settings


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


def places_holding(data: bytes, inbox: Path, outbox: Path) -> list[str]:
    """Every place these exact bytes lie: a published result's source.*, a file in the inbox's
    failed folder, or a file still in the inbox (links and staging folders are no place)."""
    return places_of([data], inbox, outbox)[data]


def places_of(datas: list[bytes], inbox: Path, outbox: Path) -> dict[bytes, list[str]]:
    """``places_holding`` for many pictures at once, in one walk of the folders."""
    import os
    import stat
    from pathlib import PurePosixPath

    from recond.inbox.failed import is_in_failed

    places: dict[bytes, list[str]] = {data: [] for data in datas}
    sizes = {len(data) for data in datas}

    def note(path: Path, place: str) -> None:
        if path.stat().st_size in sizes:
            found = places.get(path.read_bytes())
            if found is not None:
                found.append(place)

    if outbox.is_dir():
        for result in sorted(outbox.iterdir()):
            if not result.name.startswith("."):
                for copy in result.glob("source.*"):
                    note(copy, f"result {result.name}")
    for root, _, names in os.walk(inbox):
        for name in names:
            path = Path(root) / name
            if name.endswith(".error.txt") or not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            relative = path.relative_to(inbox)
            note(path, f"{'failed' if is_in_failed(PurePosixPath(relative)) else 'inbox'} {relative}")
    return places


def assert_in_one_place(data: bytes, inbox: Path, outbox: Path) -> str:
    """Nothing dropped is ever lost: the bytes lie in exactly one place (the project's rule)."""
    return assert_each_in_one_place([data], inbox, outbox)[0]


def assert_each_in_one_place(datas: list[bytes], inbox: Path, outbox: Path) -> list[str]:
    """``assert_in_one_place`` for many pictures (distinct bytes), in one walk; their places."""
    found = places_of(datas, inbox, outbox)
    astray = {data[:40]: places for data, places in found.items() if len(places) != 1}
    assert not astray, f"bytes not in exactly one place: {dict(list(astray.items())[:5])}"
    return [found[data][0] for data in datas]
