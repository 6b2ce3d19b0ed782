"""Settings for a test's own folders, with timings that keep tests quick."""

from __future__ import annotations

from pathlib import Path

from recond.config import Settings, load_settings

# Timings that keep tests quick: files settle, polls and model retries happen within a second.
TEST_TIMINGS = {"settle_seconds": 0.4, "poll_interval": 0.2, "model_retry_seconds": 0.2}
# Jobs run whole in the worker thread unless a test asks for host processes (executors/test_executors.py)
# or for the host child process (isolate_host_part): a host process imports torch, seconds that
# most tests of the worker's bookkeeping do not need.
ONE_AT_A_TIME = {"host_workers": 0, "isolate_host_part": False}


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    """Settings with folders in ``tmp_path`` (inbox and outbox created), TEST_TIMINGS and
    ONE_AT_A_TIME."""
    folders = {"inbox": tmp_path / "inbox", "outbox": tmp_path / "outbox",
               "state_dir": tmp_path / "state"}
    settings = load_settings(**{**folders, **TEST_TIMINGS, **ONE_AT_A_TIME, **overrides})
    for folder in (settings.inbox, settings.outbox):
        folder.mkdir(parents=True, exist_ok=True)
    return settings
