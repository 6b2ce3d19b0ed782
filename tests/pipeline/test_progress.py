"""Progress reports: the ETA follows the stage seconds learnt from earlier jobs, and a stage
running slower than usual is extrapolated from its own pace."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from recond.pipeline.progress import (DEFAULT_STAGE_SECONDS, STAGES, EtaEstimate, Progress, ProgressTracker,
                                      expected_stage_seconds, remember_stage_seconds)


def test_defaults_before_any_job_then_a_running_mean_of_jobs(tmp_path: Path) -> None:
    assert expected_stage_seconds(tmp_path) == DEFAULT_STAGE_SECONDS
    remember_stage_seconds(tmp_path, {stage: 10.0 for stage in STAGES})
    remember_stage_seconds(tmp_path, {stage: 20.0 for stage in STAGES})
    learnt = expected_stage_seconds(tmp_path)
    assert learnt["mesh"] == pytest.approx(0.25 * DEFAULT_STAGE_SECONDS["mesh"] + 0.25 * 10 + 0.5 * 20, abs=1e-3)
    assert json.loads((tmp_path / "stage_seconds.json").read_text()) == learnt


def test_no_history_is_written_where_there_is_no_state_dir(tmp_path: Path) -> None:
    remember_stage_seconds(tmp_path / "absent", {"mesh": 1.0})
    assert not (tmp_path / "absent").exists()


def test_eta_is_the_expected_seconds_still_ahead() -> None:
    expected = {stage: 1.0 for stage in STAGES} | {"mesh": 10.0}
    reports: list[Progress] = []
    tracker = ProgressTracker(EtaEstimate(reports.append, expected))
    with tracker.stage("load"):
        pass
    assert reports[0].eta_s == pytest.approx(sum(expected.values()), abs=0.01)
    with tracker.stage("background"):
        pass
    with tracker.stage("reconstruct"):
        pass
    with tracker.stage("grid"):
        pass
    with tracker.stage("mesh") as report:
        report(0.5)
    halfway = [r for r in reports if r.stage == "mesh" and r.stage_fraction == 0.5][0]
    assert halfway.eta_s == pytest.approx(5.0 + 5 * 1.0, abs=0.01)
    assert halfway.overall == pytest.approx((4 + 5) / sum(expected.values()))
    assert set(tracker.stage_seconds) == {"load", "background", "reconstruct", "grid", "mesh"}


def test_a_stage_slower_than_its_history_is_extrapolated_from_its_pace() -> None:
    reports: list[Progress] = []
    tracker = ProgressTracker(EtaEstimate(reports.append, {stage: 0.001 for stage in STAGES}))
    with tracker.stage("load") as report:
        time.sleep(0.2)
        report(0.5)
    # 0.2 s for half the stage: about 0.2 s more, not the 0.0005 s the history says.
    assert reports[1].eta_s > 0.15


def test_a_stage_is_overdue_only_past_twice_its_usual_time_and_the_floor() -> None:
    from recond.pipeline.progress import OVERDUE_FLOOR_SECONDS, stage_overdue

    started = 1000.0
    assert not stage_overdue(0.8, started, started + 2.0)  # issue 26: mesh 2 s against 0.8 s
    assert not stage_overdue(0.8, started, started + OVERDUE_FLOOR_SECONDS - 0.1)
    assert stage_overdue(0.8, started, started + OVERDUE_FLOOR_SECONDS + 0.1)
    assert not stage_overdue(25.0, started, started + 49.0) and stage_overdue(25.0, started, started + 51.0)
    assert not stage_overdue(None, started, started + 1e6) and not stage_overdue(1.0, None, 1e6)
