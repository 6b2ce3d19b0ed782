"""host_workers >= 1, one machine: the warm model serves device parts on one thread of the
daemon while a pool of host processes (recond.executors.host_pool) runs host parts (issue 14).
"""

from __future__ import annotations

import os
import queue
import socket
from concurrent.futures import Future, ThreadPoolExecutor

from recond.config import ModelSettings, Settings, part_of
from recond.executors import (DeviceFacts, DeviceTask, HostTask, PipelineFactory, ProgressSink, WorkerInfo,
                              build_device_pipelines, device_worker_name)
from recond.executors.host_pool import STOP_WAIT_SECONDS, HostPool
from recond.executors.inline import CancellableReports, device_part
from recond.pipeline.contract import JobResult, WarmPipeline
from recond.pipeline.handoff import DeviceOutput
from recond.pipeline.tuning import HOST_THREADS, cpu_threads, tune_torch


class LocalExecutor:
    """Warm pipelines on device threads (one per device in ``devices``, else one) and
    ``host_workers`` host processes serving them all."""

    lost: str | None = None  # its workers live in this process: never lost apart from it

    def __init__(self, settings: Settings, pipeline_factory: PipelineFactory, on_progress: ProgressSink,
                 host_workers: int) -> None:
        self.model_settings = part_of(settings, ModelSettings)
        self.pipeline_factory = pipeline_factory
        self.on_progress = on_progress
        self.host_workers = host_workers
        self.device_slots = max(1, len(self.model_settings.devices))
        self.capacity = host_workers + self.device_slots  # a job on each device while each host process runs one
        self.reports = CancellableReports(on_progress)
        self.pipelines: list[WarmPipeline] = []
        self._free_devices: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._device_jobs: dict[int, int] = {}  # device slot -> the job in its device part
        self._device_thread = ThreadPoolExecutor(self.device_slots, thread_name_prefix="recond-device")
        self._hosts: HostPool | None = None
        self._torch_threads: int | None = None  # the daemon's count before start(), put back by close()

    @property
    def pipeline(self) -> WarmPipeline | None:
        """The first warm pipeline (the only one unless ``devices`` names several)."""
        return self.pipelines[0] if self.pipelines else None

    def start(self) -> DeviceFacts:
        self.pipelines = build_device_pipelines(self.model_settings, self.pipeline_factory)
        for slot in range(len(self.pipelines)):
            self._free_devices.put(slot)
        on_cpu = sum(1 for pipeline in self.pipelines if pipeline.device == "cpu")
        if on_cpu:
            import torch

            self._torch_threads = torch.get_num_threads()  # put back by close()
            # The host processes take a core each, and several models on the CPU share what is left.
            tune_torch(max(1, cpu_threads(beside=self.host_workers) // on_cpu))
        first = self.pipelines[0]
        self._hosts = HostPool(self.host_workers, first.host_part, self.on_progress, HOST_THREADS)
        return DeviceFacts(first.model_id, ", ".join(pipeline.device for pipeline in self.pipelines),
                           first.background_method, str(first.dtype))

    def wait_for_host_process(self, timeout: float) -> bool:
        return self._hosts is None or self._hosts.wait_ready(timeout)

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
        self.pipelines = []
        if self._torch_threads is not None:  # the next executor (a SIGHUP to host_workers = 0)
            import torch                     # gets the daemon's threads back (issue 27)

            torch.set_num_threads(self._torch_threads)
            self._torch_threads = None

    def workers(self) -> list[WorkerInfo]:
        devices = ([pipeline.device for pipeline in self.pipelines]
                   or list(self.model_settings.devices) or [self.model_settings.device])
        jobs = dict(self._device_jobs)
        own = [WorkerInfo(device_worker_name(slot, len(devices)), "device", socket.gethostname(), device,
                          slot in jobs, jobs.get(slot), os.getpid()) for slot, device in enumerate(devices)]
        return [*own, *(self._hosts.workers() if self._hosts else [])]

    def _device_part(self, task: DeviceTask) -> DeviceOutput:
        assert self.pipelines, "parts run only once start() loaded the model"
        # The worker keeps at most device_slots parts here, so a device is always free.
        slot = self._free_devices.get(timeout=STOP_WAIT_SECONDS)
        self._device_jobs[slot] = task.job_id
        try:
            return device_part(self.pipelines[slot], task, self.reports)
        finally:
            del self._device_jobs[slot]
            self._free_devices.put(slot)
