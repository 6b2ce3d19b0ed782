"""What the worker (and ``reconctl process``) may ask of a warm pipeline, as types.

The real :class:`recond.pipeline.runner.Pipeline` imports torch; this module does not, so the
worker can name the interface it calls (and a type checker can follow the call) while torch
loads only when a pipeline is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from recond.config import JobSettings
from recond.pipeline.handoff import DeviceOutput
from recond.pipeline.progress import Progress, StageReport

ProgressCallback = Callable[[Progress], None]


@dataclass
class JobResult:
    """One result folder (staged; published by the caller) and what happened on the way."""

    result_dir: Path
    warnings: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


class WarmPipeline(Protocol):
    """Built once from the model settings; turns one picture into one result folder per call,
    whole (``run``) or in its two parts (recond/pipeline/runner.py, issue 14)."""

    model_id: str
    device: str
    background_method: str

    def device_part(self, source_name: str, source_bytes: bytes, job: JobSettings,
                    report: StageReport | None = None) -> DeviceOutput:
        """What needs the warm model: the picture's bytes -> the host part's hand-off."""
        ...

    @property
    def host_part(self) -> Callable[[DeviceOutput, JobSettings, Path, StageReport], JobResult]:
        """The host part, a module-level function any process can import and run."""
        ...

    def run(self, source: Path, result_dir: Path, job: JobSettings,
            progress: ProgressCallback | None = None) -> JobResult:
        """Write the result of ``source`` into ``result_dir`` (an empty staging folder the
        caller publishes through recond.layout) with ``job``'s settings."""
        ...
