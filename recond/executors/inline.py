"""host_workers = 0: both parts of a job run in the worker thread, one job at a time.

Today's one-at-a-time path (before issue 14), behind the executor interface: each submit runs
its part to the end and returns a future that is already resolved.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from recond.config import ModelSettings, Settings, part_of
from recond.executors import (DeviceFacts, DeviceTask, HostTask, JobCancelled, PartProgress,
                              PipelineFactory, ProgressSink, WorkerInfo)
from recond.pipeline.contract import JobResult, WarmPipeline
from recond.pipeline.handoff import DeviceOutput
from recond.pipeline.progress import StageReport

T = TypeVar("T")


class CancellableReports:
    """Progress reports of one executor's parts; after ``cancel()`` the next report raises
    JobCancelled, so a part leaves between two reports (a stage never stops half-way)."""

    def __init__(self, on_progress: ProgressSink) -> None:
        self.on_progress = on_progress
        self.cancelled = threading.Event()

    def of(self, job_id: int) -> StageReport:
        def report(stage: str, fraction: float) -> None:
            if self.cancelled.is_set():
                raise JobCancelled()
            self.on_progress(PartProgress(job_id, stage, fraction))

        return report


def resolved(run: Callable[[], T]) -> Future[T]:
    """A future holding what ``run()`` returned or raised (a cancellation included)."""
    future: Future[T] = Future()
    try:
        future.set_result(run())
    except (Exception, JobCancelled) as error:
        future.set_exception(error)
    return future


def device_part(pipeline: WarmPipeline, task: DeviceTask, reports: CancellableReports) -> DeviceOutput:
    return pipeline.device_part(task.source, task.job, reports.of(task.job_id))


class InlineExecutor:
    """The warm pipeline in this thread; one job in flight."""

    lost: str | None = None  # its workers live in this process: never lost apart from it

    capacity = device_slots = 1

    def __init__(self, settings: Settings, pipeline_factory: PipelineFactory,
                 on_progress: ProgressSink) -> None:
        self.model_settings = part_of(settings, ModelSettings)
        self.pipeline_factory = pipeline_factory
        self.reports = CancellableReports(on_progress)
        self.pipeline: WarmPipeline | None = None
        self._job: int | None = None

    def start(self) -> DeviceFacts:
        pipeline = self.pipeline = self.pipeline_factory(self.model_settings)
        return DeviceFacts(pipeline.model_id, pipeline.device, pipeline.background_method,
                           str(pipeline.dtype))

    def submit_device(self, task: DeviceTask) -> Future[DeviceOutput]:
        pipeline = self._started()
        return self._running(task.job_id, lambda: device_part(pipeline, task, self.reports))

    def submit_host(self, task: HostTask) -> Future[JobResult]:
        pipeline = self._started()
        return self._running(task.job_id, lambda: pipeline.host_part(task.handoff, task.job, task.result_dir,
                                                                     self.reports.of(task.job_id), task.expected_s))

    def cancel(self) -> None:
        self.reports.cancelled.set()

    def close(self) -> None:
        self.pipeline = None

    def workers(self) -> list[WorkerInfo]:
        device = self.pipeline.device if self.pipeline else self.model_settings.device
        return [WorkerInfo("inline", "device", socket.gethostname(), device, self._job is not None, self._job)]

    def _running(self, job_id: int, run: Callable[[], T]) -> Future[T]:
        self._job = job_id
        try:
            return resolved(run)
        finally:
            self._job = None

    def _started(self) -> WarmPipeline:
        assert self.pipeline is not None, "parts run only once start() loaded the model"
        return self.pipeline
