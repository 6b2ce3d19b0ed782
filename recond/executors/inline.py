"""host_workers = 0: one job at a time, its device part in the worker thread and its host part
in one child process.

The one-at-a-time path (before issue 14), behind the executor interface. The device part runs
to the end in the worker thread (it reports progress between blocks, so a stopping daemon's
cancellation reaches it). The host part runs in a pool of one host process
(recond.executors.host_pool), so a stage stuck in a C call or a process frozen by SIGSTOP is
killed at the stage's limit and the job retried (issue 22); its cost per job is in
docs/bounded-cost.md. ``isolate_host_part = false`` runs the host part in the worker thread
instead, where nothing can stop it (a debugger or profiler sees it there).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from recond.config import ModelSettings, Settings, part_of
from recond.executors import (DeviceFacts, DeviceTask, HostTask, JobCancelled, PartProgress,
                              PipelineFactory, ProgressSink, WorkerInfo)
from recond.executors.host_pool import HostPool
from recond.pipeline.contract import HostPartByName, JobResult, WarmPipeline
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
    """The warm pipeline in this thread and, unless told otherwise, one host process; one job
    in flight."""

    lost: str | None = None  # its workers live in this process: never lost apart from it

    capacity = device_slots = 1

    def __init__(self, settings: Settings, pipeline_factory: PipelineFactory,
                 on_progress: ProgressSink) -> None:
        self.model_settings = part_of(settings, ModelSettings)
        self.pipeline_factory = pipeline_factory
        self.on_progress = on_progress
        self.isolate_host_part = settings.isolate_host_part
        self.reports = CancellableReports(on_progress)
        self.pipeline: WarmPipeline | None = None
        self._hosts: HostPool | None = None
        self._job: int | None = None

    def start(self) -> DeviceFacts:
        pipeline = self.pipeline = self.pipeline_factory(self.model_settings)
        if self.isolate_host_part:
            # One job at a time: its host part has the CPUs to itself while it runs.
            self._hosts = HostPool(1, pipeline.host_part, self.on_progress,
                                   torch_threads=len(os.sched_getaffinity(0)))
        elif isinstance(pipeline.host_part, HostPartByName):
            pipeline.host_part.load()  # its imports now, not in the first job's mesh stage
        return DeviceFacts(pipeline.model_id, pipeline.device, pipeline.background_method,
                           str(pipeline.dtype))

    def wait_for_host_process(self, timeout: float) -> bool:
        """True once the host process has done its imports (at once without one)."""
        return self._hosts is None or self._hosts.wait_ready(timeout)

    def submit_device(self, task: DeviceTask) -> Future[DeviceOutput]:
        pipeline = self._started()
        return self._running(task.job_id, lambda: device_part(pipeline, task, self.reports))

    def submit_host(self, task: HostTask) -> Future[JobResult]:
        pipeline = self._started()
        if self._hosts is not None:
            return self._hosts.submit(task)
        return self._running(task.job_id, lambda: pipeline.host_part(task.handoff, task.job, task.result_dir,
                                                                     self.reports.of(task.job_id), task.expected_s))

    def cancel(self) -> None:
        self.reports.cancelled.set()
        if self._hosts is not None:
            self._hosts.cancel()

    def close(self) -> None:
        self.cancel()
        if self._hosts is not None:
            self._hosts.close()
            self._hosts = None
        self.pipeline = None

    def workers(self) -> list[WorkerInfo]:
        device = self.pipeline.device if self.pipeline else self.model_settings.device
        own = WorkerInfo("inline", "device", socket.gethostname(), device, self._job is not None, self._job)
        return [own, *(self._hosts.workers() if self._hosts else [])]

    def _running(self, job_id: int, run: Callable[[], T]) -> Future[T]:
        self._job = job_id
        try:
            return resolved(run)
        finally:
            self._job = None

    def _started(self) -> WarmPipeline:
        assert self.pipeline is not None, "parts run only once start() loaded the model"
        return self.pipeline
