"""The job store: one SQLite file (WAL) holding every job's state, plus the daemon's heartbeat.

Only the daemon writes; ``reconctl`` reads the same file, so status works without talking to
the daemon. Every state change is one ``BEGIN IMMEDIATE`` transaction, so a crash leaves each job
in one state and another process holding the file makes a write wait (bounded), not fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlite_utils

from recond.layout import display_name, free_name, fs_bytes, result_name_for

QUEUED, RUNNING, DONE, FAILED, DUPLICATE = "queued", "running", "done", "failed", "duplicate"
STATES = (QUEUED, RUNNING, DONE, FAILED, DUPLICATE)
# The daemon refreshes its row (and pings the systemd watchdog, WatchdogSec=60) this often;
# readers call a daemon whose row is older than six missed beats unresponsive.
HEARTBEAT_SECONDS = 5.0
STALE_HEARTBEAT_SECONDS = 6 * HEARTBEAT_SECONDS
ACTIVE = (QUEUED, RUNNING)
BUSY_TIMEOUT_SECONDS = 5.0  # SQLite's own wait for another process's lock, per attempt
WRITE_RETRY_SECONDS = 60.0  # then a write is retried until this much time has passed
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

DAEMON_COLUMNS: dict[str, type] = {
    "id": int, "pid": int, "started_at": float, "heartbeat_at": float, "stopped_at": float,
    "model_status": str, "model_detail": str, "device": str, "watcher_warnings": str,
    "worker_warning": str,  # e.g. the outbox is full: the queue is paused
    "workers": str,  # JSON list: where parts run (recond.executors.WorkerInfo), busy with which job
}
JSON_DAEMON_COLUMNS = ("watcher_warnings", "workers")

JOB_COLUMNS: dict[str, type] = {
    "id": int,
    "source": str,  # path relative to the inbox, e.g. "kitchen/mug.jpg" (as text)
    "source_hex": str,  # the path's bytes in hex, when they are not UTF-8 (see Job.source_name)
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
    source_hex: str | None = None

    @property
    def source_name(self) -> str:
        """The inbox path as the filesystem spells it (``source`` is its readable form)."""
        return os.fsdecode(bytes.fromhex(self.source_hex)) if self.source_hex else self.source

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        values = dict(row)
        values["warnings"] = json.loads(values.get("warnings") or "[]")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in JOB_COLUMNS}


class StoreError(RuntimeError):
    """The job database cannot be used; the message says which file and what to do."""


class Store:
    """Jobs and daemon state in ``db_path``; safe to share between the daemon's threads."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            # Autocommit connection: transactions are explicit (_writing), one lock serialises threads.
            connection = sqlite3.connect(str(db_path), check_same_thread=False,
                                         timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
            self.db = sqlite_utils.Database(connection)
            self._retrying(lambda: self.db.enable_wal())
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
            self._create_tables()
        except sqlite3.DatabaseError as error:
            raise StoreError(_unusable(db_path, error)) from None

    def _create_tables(self) -> None:
        with self._writing():
            jobs = self.db.table("jobs")
            if not jobs.exists():
                jobs.create(JOB_COLUMNS, pk="id", not_null={"source", "sha256", "state"},
                            defaults={"attempts": 0, "warnings": "[]"})
                jobs.create_index(["state", "id"])
                jobs.create_index(["sha256"])
                jobs.create_index(["source"])
                jobs.create_index(["result_name"], unique=True)
            daemon = self.db.table("daemon")
            if not daemon.exists():
                daemon.create(DAEMON_COLUMNS, pk="id")
            for table, columns in ((jobs, JOB_COLUMNS), (daemon, DAEMON_COLUMNS)):
                for name, kind in columns.items():  # a database made by an older recond
                    if name not in table.columns_dict:
                        table.add_column(name, kind)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction, taken with BEGIN IMMEDIATE so SQLite's busy timeout applies
        (a deferred transaction that upgrades to a write fails at once with "database is
        locked"), retried while another process holds the file, up to WRITE_RETRY_SECONDS."""
        with self._lock:
            self._retrying(lambda: self.db.execute("BEGIN IMMEDIATE"))
            try:
                yield
            except BaseException:
                self.db.conn.rollback()
                raise
            self._retrying(lambda: self.db.execute("COMMIT"))

    def _retrying(self, statement: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + WRITE_RETRY_SECONDS
        while True:
            try:
                return statement()
            except sqlite3.OperationalError as error:
                busy = "locked" in str(error) or "busy" in str(error)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        self.db.close()

    # Reading.

    def get(self, job_id: int) -> Job | None:
        found = self._jobs_where("id = ?", [job_id])
        return found[0] if found else None

    def jobs(self, state: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first."""
        where, args = ("state = ?", [state]) if state else (None, [])
        return self._jobs_where(where, args, order_by="id desc", limit=limit)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state, number in self._query("select state, count(*) from jobs group by state"):
            counts[state] = number
        return counts

    def running(self) -> list[Job]:
        """Every job in flight (up to host_workers + 1 of them), oldest first."""
        return self._jobs_where("state = ?", [RUNNING], order_by="id")

    def active_sources(self) -> set[str]:
        """Inbox paths that already have a queued or running job (so a rescan skips them)."""
        active = self._jobs_where("state in (?, ?)", list(ACTIVE),
                                  select="id, source, sha256, state, result_name, source_hex")
        return {job.source_name for job in active}

    def latest(self, source: str) -> Job | None:
        """The newest job of this inbox path, whatever its state."""
        return self._first("source = ? and source_hex is ?", _source_key(source))

    def duplicates_of(self, job_id: int) -> list[Job]:
        return self._jobs_where("duplicate_of = ? and state = ?", [job_id, DUPLICATE])

    # Reading, for the web front end (recond/web) and the galleries (recond/gallery.py).

    def finished(self, limit: int, offset: int = 0) -> list[Job]:
        """Done and failed jobs, newest first: the entries of a gallery page."""
        return self._jobs_where("state in (?, ?)", [DONE, FAILED], order_by="id desc",
                                limit=limit, offset=offset)

    def count_finished(self) -> int:
        return int(self._query("select count(*) from jobs where state in (?, ?)", [DONE, FAILED])[0][0])

    def by_source_prefix(self, prefix: str) -> Job | None:
        """The newest job whose inbox path starts with ``prefix`` (a web upload's id)."""
        return self._first("substr(source, 1, ?) = ?", [len(prefix), prefix])

    def changed_since(self, updated_at: float) -> list[Job]:
        """Jobs written at or after ``updated_at`` (oldest change first)."""
        return self._jobs_where("updated_at >= ?", [updated_at], order_by="updated_at")

    def data_version(self) -> int:
        """Changes whenever another connection (the daemon) commits: a cheap "anything new?"."""
        return int(self._query("pragma data_version")[0][0])

    # State changes.

    def enqueue(self, source: str, sha256: str, size: int, result_name: str,
                result_holds: Callable[[str | None, str], bool] = lambda output, sha256: True
                ) -> tuple[Job, bool]:
        """Record a settled file as a new job; returns (job, created).

        The same path already active gives back that job (created False); a queued one whose
        file changed since takes the new bytes (its duplicates become jobs of their own). The
        same bytes as an active job, or a done one whose result ``result_holds(output,
        sha256)``, give a new DUPLICATE job pointing at it. Empty files are nobody's duplicate.
        """
        now = time.time()
        text, raw = _source_key(source)
        with self._writing():
            active = self._first("source = ? and source_hex is ? and state in (?, ?)",
                                 [text, raw, *ACTIVE])
            if active and active.state == QUEUED and active.sha256 != sha256:
                self._set(active.id, sha256=sha256, size=size)
                self._promote_duplicates(active.id)
                return self._stored(active.id), False
            if active:
                return active, False
            earlier = None
            if sha256 != EMPTY_SHA256:
                earlier = self._first("sha256 = ? and state in (?, ?, ?)", [sha256, *ACTIVE, DONE])
            if earlier and (earlier.state != DONE or result_holds(earlier.output, sha256)):
                row = {"source": text, "source_hex": raw, "sha256": sha256, "size": size,
                       "state": DUPLICATE, "result_name": None, "duplicate_of": earlier.id,
                       "output": earlier.output, "queued_at": now, "finished_at": now,
                       "updated_at": now}
            else:
                row = {"source": text, "source_hex": raw, "sha256": sha256, "size": size,
                       "state": QUEUED, "result_name": self._unique_name(result_name),
                       "queued_at": now, "updated_at": now}
            return self._stored(self.db.table("jobs").insert(row).last_pk), True

    def claim_next(self) -> Job | None:
        """Oldest queued job, now running (its attempt counted)."""
        now = time.time()
        with self._writing():
            job = self._first("state = ?", [QUEUED], order_by="id")
            if job is None:
                return None
            self._set(job.id, state=RUNNING, attempts=job.attempts + 1, started_at=now,
                      stage=None, progress=0.0, eta_s=None, error=None)
            return self._stored(job.id)

    def report_progress(self, job_id: int, stage: str, progress: float, eta_s: float | None) -> None:
        with self._writing():
            self._set(job_id, stage=stage, progress=progress, eta_s=eta_s)

    def finish(self, job_id: int, output: Path, warnings: list[str], sha256: str | None = None) -> None:
        """Done; ``sha256`` when the published bytes differ from the queued ones."""
        changes = {"sha256": sha256} if sha256 else {}
        with self._writing():
            self._set(job_id, state=DONE, output=str(output), warnings=json.dumps(warnings),
                      progress=1.0, eta_s=0.0, finished_at=time.time(), error=None, **changes)
            # Duplicates recorded while this job ran now point at its result.
            self.db.execute("update jobs set output = ? where duplicate_of = ?",
                            [str(output), job_id])

    def fail(self, job_id: int, error: str, kept_at: Path | None = None) -> None:
        """Record a failure; ``kept_at`` is where the original now lies (inbox/failed/...).

        Copies recorded as its duplicates were kept in the inbox: they become jobs of their own.
        """
        with self._writing():
            self._set(job_id, state=FAILED, error=display_name(error), eta_s=None, finished_at=time.time(),
                      output=display_name(str(kept_at)) if kept_at else None)
            self._promote_duplicates(job_id)

    def requeue(self, job_id: int, count_attempt: bool = False) -> None:
        """Put a running job back. The attempt is not counted unless ``count_attempt``: a clean
        shutdown, a paused outbox, a missing share or a store error is not the job's crash; a
        worker process that died under it is (recond.executors.WorkerLost)."""
        with self._writing():
            job = self._stored(job_id)
            attempts = job.attempts if count_attempt else max(0, job.attempts - 1)
            self._set(job_id, state=QUEUED, attempts=attempts, stage=None,
                      progress=None, eta_s=None, started_at=None)

    def recover_after_crash(self, max_attempts: int,
                            published: Callable[[Job], bool] = lambda job: False
                            ) -> tuple[list[Job], list[Job]]:
        """Jobs a crash left running go back to the queue, or fail once out of attempts.

        A job whose result ``published`` says is complete goes back without counting the crash
        (the worker then records it done). Returns (requeued, exhausted); the caller moves the
        exhausted jobs' files aside (``Worker.fail_job`` with ``job.error``).
        """
        requeued, exhausted = [], []
        with self._writing():
            for job in self._jobs_where("state = ?", [RUNNING]):
                finished_work = published(job)
                if job.attempts >= max_attempts and not finished_work:
                    self._set(job.id, state=FAILED, finished_at=time.time(), error=(
                        f"recond stopped unexpectedly {job.attempts} times while processing "
                        f"this file (max_attempts = {max_attempts}); it may crash the pipeline"))
                    exhausted.append(self._stored(job.id))
                else:
                    attempts = job.attempts - 1 if finished_work else job.attempts
                    self._set(job.id, state=QUEUED, stage=None, progress=None, eta_s=None,
                              attempts=max(0, attempts))
                    requeued.append(self._stored(job.id))
        return requeued, exhausted

    # Daemon state (one row), read by `reconctl status`.

    def daemon_started(self, pid: int) -> None:
        now = time.time()
        with self._writing():
            self.db.table("daemon").upsert({"id": 1, "pid": pid, "started_at": now, "heartbeat_at": now,
                                      "stopped_at": None, "model_status": "loading",
                                      "model_detail": None, "device": None,
                                      "watcher_warnings": "[]", "worker_warning": None,
                                      "workers": "[]"}, pk="id")

    def daemon_update(self, **values: Any) -> None:
        for name in JSON_DAEMON_COLUMNS:
            if name in values:
                values[name] = json.dumps(values[name])
        with self._writing():
            self.db.table("daemon").upsert({"id": 1, **values}, pk="id")

    def daemon_state(self) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("daemon").rows_where("id = 1"))
        if not rows:
            return None
        state = dict(rows[0])
        for name in JSON_DAEMON_COLUMNS:
            state[name] = json.loads(state[name] or "[]")
        return state

    # Internals.

    def _first(self, where: str, args: list[Any], order_by: str = "id desc") -> Job | None:
        found = self._jobs_where(where, args, order_by=order_by, limit=1)
        return found[0] if found else None

    def _jobs_where(self, where: str | None, args: list[Any], **options: Any) -> list[Job]:
        """Jobs read whole under the lock. The daemon's threads share one connection, and a read
        still pending on it is aborted ("abort due to ROLLBACK") when another thread's write
        transaction rolls back, so no read may stay open across another thread's write."""
        with self._lock:
            return [Job.from_row(row) for row in self.db.table("jobs").rows_where(where, args, **options)]

    def _query(self, sql: str, args: list[Any] | None = None) -> list[Any]:
        """Rows of a plain SQL read, fetched whole under the lock (see _jobs_where)."""
        with self._lock:
            return self.db.execute(sql, args or []).fetchall()

    def _stored(self, job_id: int | None) -> Job:
        """A job this store has just written or read under its lock, so it exists."""
        job = self.get(job_id) if job_id is not None else None
        if job is None:
            raise LookupError(f"job {job_id} is not in the job database")
        return job

    def _set(self, job_id: int, **values: Any) -> None:
        self.db.table("jobs").update(job_id, {**values, "updated_at": time.time()})

    def _unique_name(self, result_name: str) -> str:
        return free_name(result_name, lambda name: self._first("result_name = ?", [name]) is not None)

    def _promote_duplicates(self, job_id: int) -> None:
        """Copies waiting on a job that will not publish their bytes are processed themselves."""
        for copy in self.duplicates_of(job_id):
            name = self._unique_name(result_name_for(copy.source_name, copy.queued_at or time.time()))
            self._set(copy.id, state=QUEUED, duplicate_of=None, output=None, finished_at=None,
                      result_name=name)


def _source_key(source: str) -> list[Any]:
    """(text, hex of its bytes or None): how a path is stored, exact even when it is not UTF-8."""
    text = display_name(source)
    raw = fs_bytes(source)
    return [text, None if raw == text.encode() else raw.hex()]


def _unusable(db_path: Path, error: sqlite3.DatabaseError) -> str:
    """One sentence naming the database file and what to do about it."""
    if isinstance(error, sqlite3.OperationalError) and "unable to open" in str(error):
        return (f"cannot open the job database {db_path} (user id {os.getuid()}): give this user "
                "read and write access to it and its folder, or point state_dir elsewhere")
    if "locked" in str(error) or "busy" in str(error):
        return (f"the job database {db_path} is held by another process; stop it (or wait) "
                "and start recond again")
    return (f"the job database {db_path} is unreadable ({error}); move it aside (recond then "
            "starts an empty one; results in the outbox are kept) or restore it from a backup")


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
