"""Progress of one pipeline run: stage, fraction and an ETA.

The ETA weighs each stage by its usual share of a CPU run, so it is sensible from the first
stage on rather than extrapolating from the quick ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# Rough share of each stage in a default CPU run (see benchmarks/bench_pipeline.py).
STAGE_WEIGHTS: dict[str, float] = {
    "load": 0.01,
    "background": 0.04,
    "reconstruct": 0.45,
    "texture": 0.30,
    "export": 0.06,
    "render": 0.09,
    "viewer": 0.03,
    "record": 0.02,
}
STAGES = tuple(STAGE_WEIGHTS)


@dataclass(frozen=True)
class Progress:
    stage: str
    stage_fraction: float
    overall: float
    eta_s: float | None


@dataclass
class ProgressTracker:
    """Turns per-stage fractions into :class:`Progress` reports and times each stage."""

    callback: Callable[[Progress], None] | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic)

    @contextmanager
    def stage(self, name: str) -> Iterator[Callable[[float], None]]:
        """Run a stage: yields a ``report(fraction)`` function; records the stage's seconds."""
        done_before = sum(STAGE_WEIGHTS[s] for s in STAGES[: STAGES.index(name)])
        stage_started = time.monotonic()

        def report(fraction: float) -> None:
            fraction = min(max(fraction, 0.0), 1.0)
            overall = min(done_before + STAGE_WEIGHTS[name] * fraction, 1.0)
            self._emit(name, fraction, overall)

        report(0.0)
        yield report
        self.stage_seconds[name] = round(time.monotonic() - stage_started, 3)
        report(1.0)

    def _emit(self, stage: str, fraction: float, overall: float) -> None:
        if self.callback is None:
            return
        elapsed = time.monotonic() - self._started
        eta = elapsed * (1.0 - overall) / overall if overall > 0.02 else None
        self.callback(Progress(stage, fraction, overall, eta))
