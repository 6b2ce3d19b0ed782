"""A stand-in pipeline for tests of the worker's bookkeeping: it honours the WarmPipeline contract and
writes a result's files without a model, in milliseconds."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from recond.config import DTypeChoice, JobSettings
from recond.pipeline.contract import SourcePicture
from recond.pipeline.progress import (
    STAGES,
)
from recond.pipeline.record import write_record




@dataclass
class Result:
    result_dir: Path
    warnings: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)


DEVICE_STAGES, HOST_STAGES = STAGES[:STAGES.index("mesh")], STAGES[STAGES.index("mesh"):]


@dataclass
class StandInHandoff:
    source_name: str
    source_bytes: bytes
    stage_seconds: float


def stand_in_host_part(handoff: StandInHandoff, job: Any, result_dir: Path, report: Any = None,
                       expected: Any = None) -> Result:
    copy = f"source{Path(handoff.source_name).suffix}"
    (result_dir / copy).write_bytes(handoff.source_bytes)
    for stage in HOST_STAGES:
        time.sleep(handoff.stage_seconds)
        if report:
            report(stage, 0.5)
    record = {"source": handoff.source_name, "source_copy": copy, "sha256": sha256(handoff.source_bytes)}
    write_record(result_dir, record)
    return Result(result_dir, ["stand-in warning"], record, {stage: 0.01 for stage in STAGES})


class StandInPipeline:
    """Writes source.<ext> and job.json into the folder it is handed; can fail or dawdle.

    Two parts like the real one: the device part reports its stages and hands the bytes on,
    the host part (a module-level function, as an executor needs) writes the files."""

    model_id, device, background_method = "stand-in", "cpu", "none"
    host_part = staticmethod(stand_in_host_part)
    dtype = DTypeChoice("float32", "stand-in")

    def __init__(self, error: Exception | None = None, stage_seconds: float = 0.0) -> None:
        self.error, self.stage_seconds, self.runs = error, stage_seconds, []
        self.job_settings: list[JobSettings] = []
        self.started = threading.Event()

    def device_part(self, source: SourcePicture, job: Any = None, report: Any = None) -> StandInHandoff:
        self.runs.append(source.name)
        self.job_settings.append(job)
        for stage in DEVICE_STAGES:
            self.started.set()
            if self.error:
                raise self.error
            time.sleep(self.stage_seconds)
            if report:
                report(stage, 0.5)
        return StandInHandoff(source.name, source.data, self.stage_seconds)

    def run(self, source: SourcePicture, result_dir: Path, job: Any = None, progress: Any = None) -> Result:
        return stand_in_host_part(self.device_part(source, job), job, result_dir)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
