"""/metrics for Prometheus: jobs by state, queue length, daemon up, model loaded, stage seconds.

The gauges are read from ``reconctl status``'s own report at each scrape, so they always match
the store. Stage seconds live in each result's job.json; the job feed hands every finished job
to :meth:`Metrics.observe` once (the history at start-up, then each new one), which reads it.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from recond.status import status_report
from recond.config import Settings
from recond.pipeline.record import read_record
from recond.store import DONE, Job

# Seconds a pipeline stage takes: tenths on a GPU up to many minutes on a CPU.
STAGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class _StoreGauges(Collector):
    """Gauges computed from the status report at scrape time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = status_report(self.settings, recent=0)
        jobs = GaugeMetricFamily("recond_jobs", "Jobs in the store by state.", labels=["state"])
        for state, number in report["counts"].items():
            jobs.add_metric([state], number)
        yield jobs
        yield GaugeMetricFamily("recond_queue_length", "Jobs waiting to run.",
                                value=report["counts"]["queued"])
        daemon = report["daemon"]
        yield GaugeMetricFamily("recond_daemon_up", "1 while the recond daemon runs and beats.",
                                value=int(bool(daemon["running"])))
        yield GaugeMetricFamily("recond_model_loaded", "1 while the running daemon has its model.",
                                value=int(bool(daemon["running"]) and daemon["model"] == "ready"))


class Metrics:
    """One registry per web app (no global state, so tests can build several apps)."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StoreGauges(settings))
        self.stage_seconds = Histogram("recond_stage_seconds", "Seconds each pipeline stage took.",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        self._observed: set[int] = set()

    def observe(self, job: Job) -> None:
        """Count a done job's stage seconds once (called from the job feed's thread)."""
        if job.state != DONE or job.id in self._observed or not job.output:
            return
        self._observed.add(job.id)
        for stage, seconds in (read_record(job.output).get("stage_seconds") or {}).items():
            self.stage_seconds.labels(stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
