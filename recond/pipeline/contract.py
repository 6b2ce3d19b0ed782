"""What the worker (and ``reconctl process``) may ask of a warm pipeline, as types.

The real :class:`recond.pipeline.runner.Pipeline` imports torch; this module does not, so the
worker can name the interface it calls (and a type checker can follow the call) while torch
loads only when a pipeline is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from recond.config import DTypeChoice, JobSettings
from recond.pipeline.handoff import DeviceOutput
from recond.pipeline.progress import Progress, StageReport

ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class SourcePicture:
    """A picture's bytes, read once by the caller from the file it checked, and the name it came
    under (for messages, the viewer's title and ``source.<ext>``): the pipeline never opens the
    file itself, so the bytes checked are the bytes used (issue 18). ``mode``: the file's
    permission bits, which its result may not exceed; ``folder``: the name of the inbox folder
    it lay in (a web upload's folder tells the viewer's title to drop the upload id)."""

    name: str
    data: bytes
    mode: int = 0o666
    folder: str = ""


@dataclass
class JobResult:
    """One result folder (staged; published by the caller) and what happened on the way."""

    result_dir: Path
    warnings: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


# The host part (recond.pipeline.host.run_host_part): the hand-off, the job's settings, the
# empty folder to fill, where its (stage, fraction) reports go, and the expected stage seconds
# its stages' time limits come from (None: the defaults).
HostPart = Callable[[DeviceOutput, JobSettings, Path, "StageReport | None", "Mapping[str, float] | None"],
                    JobResult]


@dataclass(frozen=True)
class HostPartByName:
    """A host part named by its module and function. It pickles as the two names, and imports
    the module only in the process that calls it: a daemon whose host parts run in host
    processes or on Ray never loads what they need (trimesh, scipy, xatlas: about 1 CPU-s and
    60 MB at each start, measured with `python -X importtime`)."""

    module: str
    name: str

    def load(self) -> HostPart:
        function: HostPart = getattr(importlib.import_module(self.module), self.name)
        return function

    def __call__(self, handoff: DeviceOutput, job: JobSettings, result_dir: Path,
                 report: StageReport | None = None, expected: Mapping[str, float] | None = None) -> JobResult:
        return self.load()(handoff, job, result_dir, report, expected)


RUN_HOST_PART = HostPartByName("recond.pipeline.host", "run_host_part")


class WarmPipeline(Protocol):
    """Built once from the model settings; turns one picture into one result folder per call,
    whole (``run``) or in its two parts (recond/pipeline/runner.py, issue 14)."""

    model_id: str
    device: str
    dtype: DTypeChoice
    background_method: str

    def device_part(self, source: SourcePicture, job: JobSettings,
                    report: StageReport | None = None) -> DeviceOutput:
        """What needs the warm model: the picture's bytes -> the host part's hand-off."""
        ...

    @property
    def host_part(self) -> HostPart:
        """The host part, a module-level function or a HostPartByName: any process can import
        and run it."""
        ...

    def run(self, source: SourcePicture, result_dir: Path, job: JobSettings,
            progress: ProgressCallback | None = None) -> JobResult:
        """Write the result of the picture ``source`` into ``result_dir`` (an empty staging folder the
        caller publishes through recond.outbox.publish) with ``job``'s settings."""
        ...
