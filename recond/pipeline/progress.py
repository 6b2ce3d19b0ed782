"""Progress of one pipeline run: stage, fraction, an ETA and each stage's time limit.

The ETA comes from the seconds each stage took in this machine's earlier jobs, kept in the
state dir (STAGE_HISTORY_NAME); before the first job it uses DEFAULT_STAGE_SECONDS. A stage
running longer than its history says is extrapolated from its own pace instead. The same
expected seconds, times a generous factor and never below a floor (JobSettings), give the
stage's time limit, which a stage's child process is held to (``recond.pipeline.child``).
The history is best effort: a state disk that cannot take it never costs a job its result.
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
HOST_STAGES = STAGES[STAGES.index("mesh"):]  # the host part's (recond/pipeline/host.py), in order
# Each stage as the pages say it to people (recond-web's upload page), in the order of STAGES.
STAGE_WORDS: dict[str, str] = {
    "load": "reading the photo",
    "background": "cutting out the background",
    "reconstruct": "reconstructing the shape",
    "grid": "sampling the shape's density",
    "mesh": "building the mesh",
    "texture": "painting the texture",
    "export": "saving the model files",
    "render": "rendering the turntable",
    "viewer": "making the viewer page",
    "record": "finishing up",
}
STAGE_HISTORY_NAME = "stage_seconds.json"
# Weight of the newest job in the running mean: recent jobs count most (the machine's load and
# the settings change), yet one odd job does not throw the ETA off.
NEWEST_JOB_WEIGHT = 0.5
# Status flags a stage that has run this many times its expected seconds (issue 18: a frozen
# ffmpeg showed "render 98 %, ETA 0 s" for minutes with nothing amiss in status), and never
# before OVERDUE_FLOOR_SECONDS: a 0.8 s stage that took 2 s on a busy machine is no news
# (issue 26: "status cries wolf" on every normal job).
OVERDUE_FACTOR = 2.0
OVERDUE_FLOOR_SECONDS = 10.0
# What a stage's time limit stops: only these stages run a child process (recond.pipeline.child).
STAGE_CHILDREN = {"render": "ffmpeg"}
# A job between its parts: its device part is done and no host process is free yet (issue 27).
WAITING_FOR_HOST = "waiting for a host process"


@dataclass(frozen=True)
class Progress:
    stage: str
    stage_fraction: float
    overall: float
    eta_s: float | None
    stage_started_at: float | None = None  # wall clock, so another process can tell its age
    stage_expected_s: float | None = None


def stage_overdue(expected_s: float | None, started_at: float | None, now: float) -> bool:
    """Has a stage run well past the seconds it usually takes (and past the floor)?"""
    if expected_s is None or started_at is None:
        return False
    return now - started_at > max(OVERDUE_FACTOR * expected_s, OVERDUE_FLOOR_SECONDS)


def stage_limit_s(expected_s: float, limit_factor: float, limit_floor_s: float) -> float:
    """A stage's time limit: ``limit_factor`` times its expected seconds, never below the floor
    (JobSettings' stage_limit_factor and stage_limit_floor_s)."""
    return max(limit_floor_s, limit_factor * expected_s)


def expected_stage_seconds(state_dir: Path) -> dict[str, float]:
    """Stage seconds learnt from earlier jobs on this machine, defaults for stages never seen."""
    try:
        learnt = json.loads((Path(state_dir) / STAGE_HISTORY_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        learnt = {}
    return {stage: float(learnt.get(stage, seconds)) for stage, seconds in DEFAULT_STAGE_SECONDS.items()}


def remember_stage_seconds(state_dir: Path, stage_seconds: Mapping[str, float]) -> str | None:
    """Fold one finished job's stage seconds into the history (only where the state dir exists).

    Best effort: returns why it could not (a full or read-only state disk), for a log line.
    """
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        return None
    before = expected_stage_seconds(state_dir)
    history = {stage: round((1 - NEWEST_JOB_WEIGHT) * before[stage] + NEWEST_JOB_WEIGHT * stage_seconds[stage], 3)
               if stage in stage_seconds else before[stage] for stage in STAGES}
    partial = state_dir / f".{STAGE_HISTORY_NAME}.tmp"
    try:
        partial.write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, state_dir / STAGE_HISTORY_NAME)
    except OSError as error:
        partial.unlink(missing_ok=True)
        return f"stage history not kept ({error})"
    return None


class StageClock:
    """What a running stage is handed: ``clock(fraction)`` reports its progress, and
    ``seconds_left()`` is the time it may still take (its child process is held to it)."""

    def __init__(self, report: Callable[[float], None], limit_s: float, expected_s: float) -> None:
        self._report = report
        self.limit_s = limit_s
        self.expected_s = expected_s
        self.started = time.monotonic()
        self.fraction = 0.0

    def __call__(self, fraction: float) -> None:
        self.fraction = fraction
        self._report(fraction)

    def again(self) -> None:
        """Report the last fraction again: a stage waiting on a child stays cancellable."""
        self._report(self.fraction)

    def spent(self) -> float:
        return time.monotonic() - self.started

    def seconds_left(self) -> float:
        return self.limit_s - self.spent()


StageReport = Callable[[str, float], None]  # (stage, fraction of it done): what a part reports


@dataclass
class ProgressTracker:
    """Times the stages of one part of a job and reports (stage, fraction) as each moves on.

    A part may run in another process or on another host, so it reports plain numbers; the
    worker turns them into :class:`Progress` with an ETA (:class:`EtaEstimate`). Each stage is
    held to its limit: ``limit_factor`` times its ``expected`` seconds (None:
    DEFAULT_STAGE_SECONDS), never less than ``limit_floor_s`` (JobSettings); a stage's child
    process enforces it through the :class:`StageClock` it is handed, in whatever process the
    part runs.
    """

    report_to: StageReport | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    expected: Mapping[str, float] | None = None
    limit_factor: float = 10.0
    limit_floor_s: float = 120.0

    @contextmanager
    def stage(self, name: str) -> Iterator[StageClock]:
        """Run a stage: yields its :class:`StageClock`; records the stage's seconds."""
        expected = (self.expected or DEFAULT_STAGE_SECONDS)[name]

        def report(fraction: float) -> None:
            if self.report_to is not None:
                self.report_to(name, min(max(fraction, 0.0), 1.0))

        clock = StageClock(report, stage_limit_s(expected, self.limit_factor, self.limit_floor_s), expected)
        clock(0.0)
        yield clock
        self.stage_seconds[name] = round(clock.spent(), 3)
        clock(1.0)


@dataclass
class EtaEstimate:
    """Turns one job's (stage, fraction) reports into :class:`Progress` with an ETA, from the
    expected stage seconds (None: DEFAULT_STAGE_SECONDS); a stage starts at its first report,
    which also dates it for status's overdue flag (wall clock: the stage may run elsewhere)."""

    callback: Callable[[Progress], None] | None = None
    expected: Mapping[str, float] | None = None
    _stage: str | None = field(default=None, init=False)
    _stage_started: float = field(default=0.0, init=False)
    _stage_started_at: float = field(default=0.0, init=False)

    @property
    def stage(self) -> str | None:
        """The stage of the last report (None before the first)."""
        return self._stage

    def __call__(self, name: str, fraction: float) -> None:
        if name != self._stage:
            self._stage, self._stage_started, self._stage_started_at = name, time.monotonic(), time.time()
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
            self.callback(Progress(name, fraction, overall, left_in_stage + still_after,
                                   self._stage_started_at, share))
