"""The job store: one SQLite file (WAL) holding every job's state, plus the daemon's heartbeat.

Only the daemon writes; ``reconctl`` reads the same file, so status works without talking to
the daemon. Every state change is one transaction, so a crash leaves each job in one state.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

QUEUED, RUNNING, DONE, FAILED, DUPLICATE = "queued", "running", "done", "failed", "duplicate"
STATES = (QUEUED, RUNNING, DONE, FAILED, DUPLICATE)
ACTIVE = (QUEUED, RUNNING)

JOB_COLUMNS: dict[str, type] = {
    "id": int,
    "source": str,  # path relative to the inbox, e.g. "kitchen/mug.jpg"
    "sha256": str,
    "size": int,
    "state": str,
    "attempts": int,
    "result_name": str,  # chosen at enqueue time so a restart finds an already-published result
    "output": str,  # absolute result folder once done (or the earlier one, for a duplicate)
    "duplicate_of": int,
    "error": str,
    "warnings": str,  # JSON list
    "stage": str,
    "progress": float,  # 0..1 over the whole pipeline
    "eta_s": float,
    "queued_at": float,
    "started_at": float,
    "finished_at": float,
    "updated_at": float,
}


@dataclass
class Job:
    """One row of the jobs table."""

    id: int
    source: str
    sha256: str
    state: str
    result_name: str
    size: int = 0
    attempts: int = 0
    output: str | None = None
    duplicate_of: int | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    stage: str | None = None
    progress: float | None = None
    eta_s: float | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        values = dict(row)
        values["warnings"] = json.loads(values.get("warnings") or "[]")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in JOB_COLUMNS}


class Store:
    """Jobs and daemon state in ``db_path``; safe to share between the daemon's threads."""

    def __init__(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit connection: transactions are explicit (db.atomic), one lock serialises threads.
        connection = sqlite3.connect(
            str(db_path), check_same_thread=False, timeout=30, isolation_level=None
        )
        self.db = sqlite_utils.Database(connection)
        self._lock = threading.RLock()
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        self._create_tables()

    def _create_tables(self) -> None:
        with self._lock, self.db.atomic():
            jobs = self.db.table("jobs")
            if not jobs.exists():
                jobs.create(JOB_COLUMNS, pk="id", not_null={"source", "sha256", "state"},
                            defaults={"attempts": 0, "warnings": "[]"})
                jobs.create_index(["state", "id"])
                jobs.create_index(["sha256"])
                jobs.create_index(["result_name"], unique=True)
            daemon = self.db.table("daemon")
            if not daemon.exists():
                daemon.create({"id": int, "pid": int, "started_at": float, "heartbeat_at": float,
                               "stopped_at": float, "model_status": str, "model_detail": str,
                               "device": str, "watcher_warnings": str}, pk="id")

    def close(self) -> None:
        self.db.close()

    # Reading.

    def get(self, job_id: int) -> Job | None:
        rows = list(self.db.table("jobs").rows_where("id = ?", [job_id]))
        return Job.from_row(rows[0]) if rows else None

    def jobs(self, state: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first."""
        where, args = ("state = ?", [state]) if state else (None, [])
        rows = self.db.table("jobs").rows_where(where, args, order_by="id desc", limit=limit)
        return [Job.from_row(row) for row in rows]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state, number in self.db.execute("select state, count(*) from jobs group by state"):
            counts[state] = number
        return counts

    def running(self) -> Job | None:
        rows = list(self.db.table("jobs").rows_where("state = ?", [RUNNING], order_by="id", limit=1))
        return Job.from_row(rows[0]) if rows else None

    def active_sources(self) -> set[str]:
        """Inbox paths that already have a queued or running job (so a rescan skips them)."""
        rows = self.db.execute("select source from jobs where state in (?, ?)", ACTIVE)
        return {source for (source,) in rows}

    # Reading, for the web front end (recond/web) and the galleries (recond/gallery.py).

    def finished(self, limit: int, offset: int = 0) -> list[Job]:
        """Done and failed jobs, newest first: the entries of a gallery page."""
        rows = self.db["jobs"].rows_where("state in (?, ?)", [DONE, FAILED], order_by="id desc",
                                          limit=limit, offset=offset)
        return [Job.from_row(row) for row in rows]

    def count_finished(self) -> int:
        return self.db.execute("select count(*) from jobs where state in (?, ?)",
                               [DONE, FAILED]).fetchone()[0]

    def by_source_prefix(self, prefix: str) -> Job | None:
        """The newest job whose inbox path starts with ``prefix`` (a web upload's id)."""
        return self._first("substr(source, 1, ?) = ?", [len(prefix), prefix])

    def changed_since(self, updated_at: float) -> list[Job]:
        """Jobs written at or after ``updated_at`` (oldest change first)."""
        rows = self.db["jobs"].rows_where("updated_at >= ?", [updated_at], order_by="updated_at")
        return [Job.from_row(row) for row in rows]

    def data_version(self) -> int:
        """Changes whenever another connection (the daemon) commits: a cheap "anything new?"."""
        return self.db.execute("pragma data_version").fetchone()[0]

    # State changes.

    def enqueue(self, source: str, sha256: str, size: int, result_name: str,
                result_exists: Any = lambda output: True) -> tuple[Job, bool]:
        """Record a settled file as a new job; returns (job, created).

        The same path already queued or running gives back that job (created False). The same
        bytes as an active or done job (for a done one, only while ``result_exists(output)``)
        give a new DUPLICATE job pointing at it.
        """
        now = time.time()
        with self._lock, self.db.atomic():
            active = self._first("source = ? and state in (?, ?)", [source, *ACTIVE])
            if active:
                return active, False
            earlier = self._first("sha256 = ? and state in (?, ?, ?)", [sha256, *ACTIVE, DONE])
            if earlier and (earlier.state != DONE or result_exists(earlier.output)):
                row = {"source": source, "sha256": sha256, "size": size, "state": DUPLICATE,
                       "result_name": None, "duplicate_of": earlier.id, "output": earlier.output,
                       "queued_at": now, "finished_at": now, "updated_at": now}
            else:
                row = {"source": source, "sha256": sha256, "size": size, "state": QUEUED,
                       "result_name": self._unique_name(result_name), "queued_at": now,
                       "updated_at": now}
            return self._stored(self.db.table("jobs").insert(row).last_pk), True

    def claim_next(self) -> Job | None:
        """Oldest queued job, now running (its attempt counted)."""
        now = time.time()
        with self._lock, self.db.atomic():
            job = self._first("state = ?", [QUEUED], order_by="id")
            if job is None:
                return None
            self._set(job.id, state=RUNNING, attempts=job.attempts + 1, started_at=now,
                      stage=None, progress=0.0, eta_s=None, error=None)
            return self.get(job.id)

    def report_progress(self, job_id: int, stage: str, progress: float, eta_s: float | None) -> None:
        with self._lock, self.db.atomic():
            self._set(job_id, stage=stage, progress=progress, eta_s=eta_s)

    def finish(self, job_id: int, output: Path, warnings: list[str]) -> None:
        with self._lock, self.db.atomic():
            self._set(job_id, state=DONE, output=str(output), warnings=json.dumps(warnings),
                      progress=1.0, eta_s=0.0, finished_at=time.time(), error=None)
            # Duplicates recorded while this job ran now point at its result.
            self.db.execute("update jobs set output = ? where duplicate_of = ?",
                            [str(output), job_id])

    def fail(self, job_id: int, error: str, kept_at: Path | None = None) -> None:
        """Record a failure; ``kept_at`` is where the original now lies (inbox/failed/...)."""
        with self._lock, self.db.atomic():
            self._set(job_id, state=FAILED, error=error, eta_s=None, finished_at=time.time(),
                      output=str(kept_at) if kept_at else None)

    def requeue(self, job_id: int) -> None:
        """Put a running job back, not counting the attempt (a clean shutdown, not a crash)."""
        with self._lock, self.db.atomic():
            job = self._stored(job_id)
            self._set(job_id, state=QUEUED, attempts=max(0, job.attempts - 1), stage=None,
                      progress=None, eta_s=None, started_at=None)

    def recover_after_crash(self, max_attempts: int) -> tuple[list[Job], list[Job]]:
        """Jobs a crash left running go back to the queue, or fail once out of attempts.

        Returns (requeued, exhausted); the caller moves the exhausted jobs' files aside
        (``Worker.fail_job`` with ``job.error``).
        """
        requeued, exhausted = [], []
        with self._lock, self.db.atomic():
            for job in [Job.from_row(r) for r in self.db.table("jobs").rows_where("state = ?", [RUNNING])]:
                if job.attempts >= max_attempts:
                    self._set(job.id, state=FAILED, finished_at=time.time(), error=(
                        f"recond stopped unexpectedly {job.attempts} times while processing "
                        f"this file (max_attempts = {max_attempts}); it may crash the pipeline"))
                    exhausted.append(self._stored(job.id))
                else:
                    self._set(job.id, state=QUEUED, stage=None, progress=None, eta_s=None)
                    requeued.append(self._stored(job.id))
        return requeued, exhausted

    # Daemon state (one row), read by `reconctl status`.

    def daemon_started(self, pid: int) -> None:
        now = time.time()
        with self._lock, self.db.atomic():
            self.db.table("daemon").upsert({"id": 1, "pid": pid, "started_at": now, "heartbeat_at": now,
                                      "stopped_at": None, "model_status": "loading",
                                      "model_detail": None, "device": None,
                                      "watcher_warnings": "[]"}, pk="id")

    def daemon_update(self, **values: Any) -> None:
        if "watcher_warnings" in values:
            values["watcher_warnings"] = json.dumps(values["watcher_warnings"])
        with self._lock, self.db.atomic():
            self.db.table("daemon").upsert({"id": 1, **values}, pk="id")

    def daemon_state(self) -> dict[str, Any] | None:
        rows = list(self.db.table("daemon").rows_where("id = 1"))
        if not rows:
            return None
        state = dict(rows[0])
        state["watcher_warnings"] = json.loads(state["watcher_warnings"] or "[]")
        return state

    # Internals.

    def _first(self, where: str, args: list[Any], order_by: str = "id desc") -> Job | None:
        rows = list(self.db.table("jobs").rows_where(where, args, order_by=order_by, limit=1))
        return Job.from_row(rows[0]) if rows else None

    def _stored(self, job_id: int | None) -> Job:
        """A job this store has just written or read under its lock, so it exists."""
        job = self.get(job_id) if job_id is not None else None
        if job is None:
            raise LookupError(f"job {job_id} is not in the job database")
        return job

    def _set(self, job_id: int, **values: Any) -> None:
        self.db.table("jobs").update(job_id, {**values, "updated_at": time.time()})

    def _unique_name(self, result_name: str) -> str:
        name, number = result_name, 1
        while self._first("result_name = ?", [name]):
            number += 1
            name = f"{result_name}-{number}"
        return name


def pid_alive(pid: int | None) -> bool:
    """True when a process with this id exists (used to tell a stale heartbeat from a live one)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
