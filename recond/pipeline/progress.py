"""Progress of one pipeline run: stage, fraction and an ETA.

The ETA comes from the seconds each stage took in this machine's earlier jobs, kept in the
state dir (STAGE_HISTORY_NAME); before the first job it uses DEFAULT_STAGE_SECONDS. A stage
running longer than its history says is extrapolated from its own pace instead.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# Seconds of each stage in a default CPU job with the full-size model (bench_chair figures from
# benchmarks/bench_pipeline.py, encode from the full-size forward pass); used before any job ran.
DEFAULT_STAGE_SECONDS: dict[str, float] = {
    "load": 0.05,
    "background": 1.0,
    "reconstruct": 25.0,
    "grid": 4.25,  # the density grid: ~85 % of the mesh work, on the model's device
    "mesh": 0.75,  # marching cubes, floaters, simplify, vertex colours: on the host
    "texture": 3.0,
    "export": 0.5,
    "render": 2.0,
    "viewer": 0.2,
    "record": 0.05,
}
STAGES = tuple(DEFAULT_STAGE_SECONDS)
STAGE_HISTORY_NAME = "stage_seconds.json"
# Weight of the newest job in the running mean: recent jobs count most (the machine's load and
# the settings change), yet one odd job does not throw the ETA off.
NEWEST_JOB_WEIGHT = 0.5


@dataclass(frozen=True)
class Progress:
    stage: str
    stage_fraction: float
    overall: float
    eta_s: float | None


def expected_stage_seconds(state_dir: Path) -> dict[str, float]:
    """Stage seconds learnt from earlier jobs on this machine, defaults for stages never seen."""
    try:
        learnt = json.loads((Path(state_dir) / STAGE_HISTORY_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        learnt = {}
    return {stage: float(learnt.get(stage, seconds)) for stage, seconds in DEFAULT_STAGE_SECONDS.items()}


def remember_stage_seconds(state_dir: Path, stage_seconds: Mapping[str, float]) -> None:
    """Fold one finished job's stage seconds into the history (only where the state dir exists)."""
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        return
    before = expected_stage_seconds(state_dir)
    history = {stage: round((1 - NEWEST_JOB_WEIGHT) * before[stage] + NEWEST_JOB_WEIGHT * stage_seconds[stage], 3)
               if stage in stage_seconds else before[stage] for stage in STAGES}
    partial = state_dir / f".{STAGE_HISTORY_NAME}.tmp"
    partial.write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, state_dir / STAGE_HISTORY_NAME)


StageReport = Callable[[str, float], None]  # (stage, fraction of it done): what a part reports


@dataclass
class ProgressTracker:
    """Times the stages of one part of a job and reports (stage, fraction) as each moves on.

    A part may run in another process or on another host, so it reports plain numbers; the
    worker turns them into :class:`Progress` with an ETA (:class:`EtaEstimate`).
    """

    report_to: StageReport | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[Callable[[float], None]]:
        """Run a stage: yields a ``report(fraction)`` function; records the stage's seconds."""
        stage_started = time.monotonic()

        def report(fraction: float) -> None:
            if self.report_to is not None:
                self.report_to(name, min(max(fraction, 0.0), 1.0))

        report(0.0)
        yield report
        self.stage_seconds[name] = round(time.monotonic() - stage_started, 3)
        report(1.0)


@dataclass
class EtaEstimate:
    """Turns one job's (stage, fraction) reports into :class:`Progress` with an ETA, from the
    expected stage seconds (None: DEFAULT_STAGE_SECONDS); a stage starts at its first report."""

    callback: Callable[[Progress], None] | None = None
    expected: Mapping[str, float] | None = None
    _stage: str | None = field(default=None, init=False)
    _stage_started: float = field(default=0.0, init=False)

    def __call__(self, name: str, fraction: float) -> None:
        if name != self._stage:
            self._stage, self._stage_started = name, time.monotonic()
        expected = self.expected or DEFAULT_STAGE_SECONDS
        index = STAGES.index(name)
        total = sum(expected.values())
        done_before = sum(expected[s] for s in STAGES[:index])
        still_after = sum(expected[s] for s in STAGES[index + 1:])
        share = expected[name]
        overall = min((done_before + share * fraction) / total, 1.0)
        spent = time.monotonic() - self._stage_started
        left_in_stage = share * (1.0 - fraction)
        if fraction > 0 and spent > share * fraction:  # slower than usual: go by its own pace
            left_in_stage = spent * (1.0 - fraction) / fraction
        if self.callback is not None:
            self.callback(Progress(name, fraction, overall, left_in_stage + still_after))
