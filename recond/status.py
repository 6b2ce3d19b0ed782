"""What recond is doing, as plain data: the daemon, the queue and each job's facts.

Owned here, below both front ends: `reconctl status/show` format it for a terminal and
recond-web serves it as JSON, pages and metrics. It reads the job database only (and a done
job's job.json), so it answers while the daemon is down and loads no heavy library.
"""

from __future__ import annotations

import time
from typing import Any

from recond.config import Settings
from recond.heartbeat import liveness_age
from recond.pipeline.progress import STAGE_CHILDREN, stage_overdue
from recond.pipeline.record import read_record
from recond.shares.lease import pid_alive
from recond.store import (
    DONE,
    HEARTBEAT_SECONDS,
    RUNNING,
    STALE_HEARTBEAT_SECONDS,
    STATES,
    Job,
    Store,
)


def open_store(settings: Settings, reader: bool = False) -> Store | None:
    """The job database, or None when recond has never run with these settings (raises
    StoreError with one sentence when it exists but cannot be read); ``reader``: see Store."""
    if not settings.db_path.is_file():
        return None
    return Store(settings.db_path, reader=reader)


def status_report(settings: Settings, recent: int = 10) -> dict[str, Any]:
    """Everything `reconctl status` shows, as plain data (also the --json output).

    It answers at once when another process holds the database (WAL readers do not wait for
    writers) and says so: then the daemon cannot record its heartbeat, and its liveness file
    (recond/heartbeat.py) tells whether it still runs.
    """
    store = open_store(settings, reader=True)
    daemon = (store.daemon_state() if store else None) or {}
    now = time.time()
    beat_age = now - daemon["heartbeat_at"] if daemon.get("heartbeat_at") else None
    running = bool(daemon) and not daemon.get("stopped_at") and pid_alive(daemon.get("pid"))
    busy = (store is not None and running and (beat_age is None or beat_age >= 2 * HEARTBEAT_SECONDS)
            and store.held_by_another())
    alive_age = liveness_age(settings.heartbeat_path) if running else None
    if alive_age is not None and (beat_age is None or alive_age < beat_age):
        beat_age = alive_age
    report: dict[str, Any] = {
        "state_dir": str(settings.state_dir.resolve()),
        "database": store is not None,
        "database_busy": busy,
        "daemon": {
            "running": running and beat_age is not None and beat_age < STALE_HEARTBEAT_SECONDS,
            "pid": daemon.get("pid") if running else None,
            "uptime_s": round(now - daemon["started_at"]) if running else None,
            "heartbeat_age_s": round(beat_age, 1) if beat_age is not None else None,
            "unresponsive": running and (beat_age is None or beat_age >= STALE_HEARTBEAT_SECONDS),
            "stopped_at": daemon.get("stopped_at"),
            # What a stopped daemon last recorded is history, not the model's state now.
            "model": daemon.get("model_status") if running else None,
            "model_detail": daemon.get("model_detail") if running else None,
            "device": daemon.get("device") if running else None,
            "dtype": daemon.get("dtype") if running else None,
            "watcher_warnings": daemon.get("watcher_warnings", []) if running else [],
            "worker_warning": daemon.get("worker_warning") if running else None,
            # Where jobs' parts run: the warm model(s) and the host processes (recond.executors).
            "workers": daemon.get("workers", []) if running else [],
            # Host processes killed past a stage's limit and replaced (recond.executors.host_pool).
            "host_stops": daemon.get("host_stops", []) if running else [],
        },
        "counts": store.counts() if store else dict.fromkeys(STATES, 0),
        "running": [],
        "recent": [],
        "last_background": None,
        # Hook runs and webhook POSTs not yet made (recond/workflows/couriers.py, issue 25).
        "owed": store.owed_counts() if store else {"hook": 0, "webhook": 0},
        "presets": sorted(settings.presets),
    }
    if store:
        report["running"] = [_running(job, now) for job in store.running()]
        report["recent"] = [_summary(job) for job in store.jobs(limit=recent)
                            if job.state != RUNNING]
        last_done = store.jobs(DONE, limit=1)
        if last_done:
            record = _result_record(last_done[0])
            report["last_background"] = {"id": last_done[0].id, "method": record.get("background")}
        store.close()
    return report


def _running(job: Job, now: float) -> dict[str, Any]:
    """One running job: its stage, progress and ETA, and whether its stage is overdue."""
    return {"id": job.id, "source": job.source, "preset": job.preset, "stage": job.stage,
            "progress": job.progress, "eta_s": job.eta_s, "started_at": job.started_at,
            "stage_seconds": round(now - job.stage_started_at, 1) if job.stage_started_at else None,
            "stage_expected_s": job.stage_expected_s,
            "stage_overdue": stage_overdue(job.stage_expected_s, job.stage_started_at, now),
            "stage_child": STAGE_CHILDREN.get(job.stage or "")}  # what the stage's limit stops


def _summary(job: Job) -> dict[str, Any]:
    return {"id": job.id, "source": job.source, "preset": job.preset, "state": job.state,
            "output": job.output,
            "error": job.error, "duplicate_of": job.duplicate_of, "finished_at": job.finished_at}


def job_facts(job: Job) -> dict[str, Any]:
    """What `reconctl show` reports: the job's row, plus what its job.json says it used."""
    record = _result_record(job)
    return {**job.as_dict(), "background": record.get("background"),
            "stage_seconds": record.get("stage_seconds")}


def _result_record(job: Job) -> dict[str, Any]:
    """The job.json of a done job's result folder ({} when the folder is gone or unreadable)."""
    if job.state != DONE or not job.output:
        return {}
    return read_record(job.output)
