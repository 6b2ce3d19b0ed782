"""host_workers >= 1, one machine: the warm model serves device parts on one thread of the
daemon while a pool of host processes (recond.executors.host_pool) runs host parts (issue 14).
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import Future, ThreadPoolExecutor

from recond.config import ModelSettings, Settings, part_of
from recond.executors import DeviceFacts, DeviceTask, HostTask, PipelineFactory, ProgressSink, WorkerInfo
from recond.executors.host_pool import HostPool
from recond.executors.inline import CancellableReports, device_part
from recond.pipeline.contract import JobResult, WarmPipeline
from recond.pipeline.handoff import DeviceOutput
from recond.pipeline.tuning import HOST_THREADS, cpu_threads, tune_torch


class LocalExecutor:
    """A warm pipeline on one device thread and ``host_workers`` host processes."""

    lost: str | None = None  # its workers live in this process: never lost apart from it

    def __init__(self, settings: Settings, pipeline_factory: PipelineFactory, on_progress: ProgressSink,
                 host_workers: int) -> None:
        self.model_settings = part_of(settings, ModelSettings)
        self.pipeline_factory = pipeline_factory
        self.on_progress = on_progress
        self.host_workers = host_workers
        self.capacity = host_workers + 1  # one job on the device while each host process runs one
        self.device_slots = 1
        self.reports = CancellableReports(on_progress)
        self.pipeline: WarmPipeline | None = None
        self._device_thread = ThreadPoolExecutor(1, thread_name_prefix="recond-device")
        self._device_job: int | None = None
        self._hosts: HostPool | None = None
        self._torch_threads: int | None = None  # the daemon's count before start(), put back by close()

    def start(self) -> DeviceFacts:
        pipeline = self.pipeline = self.pipeline_factory(self.model_settings)
        if pipeline.device == "cpu":
            import torch

            self._torch_threads = torch.get_num_threads()  # put back by close()
            tune_torch(cpu_threads(beside=self.host_workers))  # the host processes take a core each
        self._hosts = HostPool(self.host_workers, pipeline.host_part, self.on_progress, HOST_THREADS)
        return DeviceFacts(pipeline.model_id, pipeline.device, pipeline.background_method,
                           str(pipeline.dtype))

    def submit_device(self, task: DeviceTask) -> Future[DeviceOutput]:
        return self._device_thread.submit(self._device_part, task)

    def submit_host(self, task: HostTask) -> Future[JobResult]:
        assert self._hosts is not None, "parts run only once start() loaded the model"
        return self._hosts.submit(task)

    def cancel(self) -> None:
        self.reports.cancelled.set()
        if self._hosts is not None:
            self._hosts.cancel()

    def close(self) -> None:
        self.cancel()
        if self._hosts is not None:
            self._hosts.close()
        self._device_thread.shutdown(wait=True, cancel_futures=True)
        self.pipeline = None
        if self._torch_threads is not None:  # the next executor (a SIGHUP to host_workers = 0)
            import torch                     # gets the daemon's threads back (issue 27)

            torch.set_num_threads(self._torch_threads)
            self._torch_threads = None

    def workers(self) -> list[WorkerInfo]:
        device = self.pipeline.device if self.pipeline else self.model_settings.device
        job = self._device_job
        own = WorkerInfo("device", "device", socket.gethostname(), device, job is not None, job, os.getpid())
        return [own, *(self._hosts.workers() if self._hosts else [])]

    def _device_part(self, task: DeviceTask) -> DeviceOutput:
        assert self.pipeline is not None, "parts run only once start() loaded the model"
        self._device_job = task.job_id
        try:
            return device_part(self.pipeline, task, self.reports)
        finally:
            self._device_job = None
