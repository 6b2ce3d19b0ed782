"""The job store: one SQLite file (WAL) holding every job's state, plus the daemon's heartbeat.

The daemon writes; ``reconctl`` reads the same file, so status works without talking to
the daemon. A redo (``reconctl redo``, recond-web's redo) is the one row written beside it: a
queued job, inserted in one transaction like the daemon's own writes (issue 25). Every state change is one ``BEGIN IMMEDIATE`` transaction, so a crash leaves each job
in one state and another process holding the file makes a write wait (bounded), not fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from recond.names import display_name, free_name, fs_bytes, result_name_for

QUEUED, RUNNING, DONE, FAILED, DUPLICATE = "queued", "running", "done", "failed", "duplicate"
STATES = (QUEUED, RUNNING, DONE, FAILED, DUPLICATE)
# The daemon refreshes its row (and pings the systemd watchdog, WatchdogSec=60) this often;
# readers call a daemon whose row is older than six missed beats unresponsive.
HEARTBEAT_SECONDS = 5.0
STALE_HEARTBEAT_SECONDS = 6 * HEARTBEAT_SECONDS
ACTIVE = (QUEUED, RUNNING)
BUSY_TIMEOUT_SECONDS = 5.0  # SQLite's own wait for another process's lock, per attempt
# A write that found the database busy this recently counts as still waiting: between one
# write giving up and the next starting to wait, SQLite's own busy wait runs unseen.
BUSY_RECENT_SECONDS = 2 * BUSY_TIMEOUT_SECONDS + 1
READ_BUSY_SECONDS = 0.5  # a reader (`reconctl status`) answers rather than waits for a writer
WRITE_RETRY_SECONDS = 60.0  # then a write is retried until this much time has passed
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

DAEMON_COLUMNS: dict[str, type] = {
    "id": int, "pid": int, "started_at": float, "heartbeat_at": float, "stopped_at": float,
    "model_status": str, "model_detail": str, "device": str,
    "dtype": str,  # the encoder's compute dtype and why, e.g. "bfloat16 (CPU has avx512_bf16)"
    "watcher_warnings": str,
    "worker_warning": str,  # e.g. the outbox is full: the queue is paused
    "workers": str,  # JSON list: where parts run (recond.executors.WorkerInfo), busy with which job
    "host_stops": str,  # JSON list: host processes killed past a stage's limit (recond.worker)
}
JSON_DAEMON_COLUMNS = ("watcher_warnings", "workers", "host_stops")

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
    "stage_started_at": float,  # when the running stage began (wall clock) ...
    "stage_expected_s": float,  # ... and how long it usually takes: status flags one past it
    # 1 while the running part runs inside the daemon process (0: in a host process or on Ray),
    # so a daemon crash charges an attempt only to the job it could have caused (issue 27).
    "part_in_daemon": int,
    "queued_at": float,
    "started_at": float,
    "finished_at": float,
    "updated_at": float,
    "preset": str,  # the preset it was made with (issue 25): named by a redo, else its inbox folder's
    "overrides": str,  # JSON object: job settings a redo set (--set KEY=VALUE), over the preset's
    "redo_of": str,  # a redo's result folder in the outbox: its source.* is the job's picture
}

DELIVERY_COLUMNS: dict[str, type] = {
    "id": int,
    "event_id": str,  # unique per event and channel: a webhook's X-Recond-Event-Id
    "event": str,  # published or failed
    "channel": str,  # hook or webhook
    "job_id": int,
    "path": str,  # the result folder, or the picture's place in inbox/failed/
    "payload": str,  # a hook's standard input, or the webhook's JSON body
    "attempts": int,
    "created_at": float,
    "next_at": float,  # when it is tried (again)
    "last_error": str,
    "finished_at": float,  # set once it is done with: delivered, run, or given up
    "outcome": str,  # delivered, ran, failed (a hook's exit status), gave up
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
    stage_started_at: float | None = None
    stage_expected_s: float | None = None
    part_in_daemon: int | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    source_hex: str | None = None
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    redo_of: str | None = None

    @property
    def source_name(self) -> str:
        """The inbox path as the filesystem spells it (``source`` is its readable form)."""
        return os.fsdecode(bytes.fromhex(self.source_hex)) if self.source_hex else self.source

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        values = dict(row)
        values["warnings"] = json.loads(values.get("warnings") or "[]")
        values["overrides"] = json.loads(values.get("overrides") or "{}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in JOB_COLUMNS}


@dataclass
class Delivery:
    """One owed hook run or webhook POST (issue 25): kept until it is done with, so a restart
    runs what a stop left owed."""

    id: int
    event_id: str
    event: str
    channel: str
    job_id: int
    path: str
    payload: str
    attempts: int = 0
    created_at: float = 0.0
    next_at: float = 0.0
    last_error: str | None = None
    finished_at: float | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class Owed:
    """A delivery to record: (event, channel, path, payload); the store gives it its id."""

    event: str
    channel: str
    path: str
    payload: str


class StoreError(RuntimeError):
    """The job database cannot be used; the message says which file and what to do."""


class Store:
    """Jobs and daemon state in ``db_path``; safe to share between the daemon's threads.

    ``reader=True`` (``reconctl status``) opens an existing database as it is: no
    schema change and no wait on another process's write lock, which WAL readers never need.
    """

    def __init__(self, db_path: Path, reader: bool = False) -> None:
        self.db_path = db_path
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._found_busy_at = float("-inf")  # when a write last found another process's lock
        self._busy_timeout_ms = int((READ_BUSY_SECONDS if reader else BUSY_TIMEOUT_SECONDS) * 1000)
        try:
            # Autocommit connection: transactions are explicit (_writing), one lock serialises threads.
            connection = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None,
                                         timeout=self._busy_timeout_ms / 1000)
            self.db = sqlite_utils.Database(connection)
            self.identity = _identity(db_path)
            if not (reader and self.db.table("daemon").exists()):
                self._retrying(lambda: self.db.enable_wal())
                self._create_tables()
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        except (sqlite3.DatabaseError, OSError) as error:
            raise StoreError(database_error(db_path, error)) from None

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
            deliveries = self.db.table("deliveries")
            if not deliveries.exists():
                deliveries.create(DELIVERY_COLUMNS, pk="id", defaults={"attempts": 0})
                # One of each per job: a job recorded done twice (a crash after its publish) owes once.
                deliveries.create_index(["job_id", "event", "channel"], unique=True)
                deliveries.create_index(["channel", "finished_at", "next_at"])
            for table, columns in ((jobs, JOB_COLUMNS), (daemon, DAEMON_COLUMNS),
                                   (deliveries, DELIVERY_COLUMNS)):
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
                if not _is_busy(error) or time.monotonic() > deadline:
                    raise
                self._found_busy_at = time.monotonic()
                time.sleep(0.2)

    def waiting_on_another_process(self) -> bool:
        """True while writes wait for a lock another process holds (a bounded wait, not a hang):
        one found the database busy within the last BUSY_RECENT_SECONDS."""
        return time.monotonic() - self._found_busy_at < BUSY_RECENT_SECONDS

    def held_by_another(self) -> bool:
        """True when a write could not start now: some connection holds the write lock."""
        with self._lock:
            self.db.execute("PRAGMA busy_timeout = 0")
            try:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("ROLLBACK")
                return False
            except sqlite3.OperationalError as error:
                return _is_busy(error)  # else, e.g. read-only for this user: nobody holds it
            finally:
                self.db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")

    def replaced(self) -> str | None:
        """A sentence when the file at ``db_path`` is no longer the database this store opened
        (deleted, or replaced by another file); None while it is."""
        try:
            now = _identity(self.db_path)
        except FileNotFoundError:
            now = None
        except OSError:
            return None  # unreadable for a moment is not replaced
        if now == self.identity:
            return None
        what = "deleted" if now is None else "replaced by another file"
        return (f"the job database {self.db_path} was {what} while recond ran; recond stops so "
                "that no job is recorded where nobody reads it (on the next start it learns the "
                "published results from the outbox)")

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
        active = self._jobs_where("state in (?, ?) and redo_of is null", list(ACTIVE),
                                  select="id, source, sha256, state, result_name, source_hex")
        return {job.source_name for job in active}

    def latest(self, source: str) -> Job | None:
        """The newest job of this inbox path, whatever its state."""
        return self._first("source = ? and source_hex is ? and redo_of is null", _source_key(source))

    def duplicates_of(self, job_id: int) -> list[Job]:
        return self._jobs_where("duplicate_of = ? and state = ?", [job_id, DUPLICATE])

    # Reading, for the web front end (recond/web) and the galleries (recond/outbox/gallery.py).

    def finished(self, limit: int, offset: int = 0) -> list[Job]:
        """Done and failed jobs, newest first: the entries of a gallery page."""
        return self._jobs_where("state in (?, ?)", [DONE, FAILED], order_by="id desc",
                                limit=limit, offset=offset)

    def count_finished(self) -> int:
        return int(self._query("select count(*) from jobs where state in (?, ?)", [DONE, FAILED])[0][0])

    def by_source_prefix(self, prefix: str) -> Job | None:
        """The newest job whose inbox path starts with ``prefix``, or with a preset's folder
        and then ``prefix`` (a web upload's id: names.upload_prefix)."""
        return self._first("redo_of is null and (substr(source, 1, ?) = ? or instr(source, ?) = "
                           "instr(source, '/') + 1)", [len(prefix), prefix, prefix])

    def by_result_name(self, result_name: str) -> Job | None:
        """The done job that published this outbox folder."""
        return self._first("result_name = ? and state = ?", [result_name, DONE])

    def queued_before(self, job_id: int) -> int:
        """Queued jobs the worker takes before this one (it takes the oldest first: claim_next)."""
        return int(self._query("select count(*) from jobs where state = ? and id < ?",
                               [QUEUED, job_id])[0][0])

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
        A copy already recorded as a duplicate of these bytes stays that one row, however often
        it is rescanned (issue 18).
        """
        now = time.time()
        text, raw = _source_key(source)
        with self._writing():
            active = self._first("source = ? and source_hex is ? and state in (?, ?) and redo_of is null",
                                 [text, raw, *ACTIVE])
            if active and active.state == QUEUED and active.sha256 != sha256:
                self._set(active.id, sha256=sha256, size=size)
                self._promote_duplicates(active.id)
                return self._stored(active.id), False
            if active:
                return active, False
            waiting = self._first("source = ? and source_hex is ? and redo_of is null", [text, raw])
            if waiting and waiting.state == DUPLICATE and waiting.sha256 == sha256:
                if self._still_duplicate(waiting, result_holds):
                    return waiting, False
                self._promote([waiting])  # its original's result is gone: the copy is the job
                return self._stored(waiting.id), True
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

    def record_refused(self, source: str, size: int, reason: str) -> Job:
        """A file refused before it was hashed (over max_file_bytes, or too slow to read): a
        failed job at once, with no sha256, shown and retried like any failed job."""
        now = time.time()
        text, raw = _source_key(source)
        with self._writing():
            row = {"source": text, "source_hex": raw, "sha256": "", "size": size, "state": FAILED,
                   "result_name": None, "error": display_name(reason), "queued_at": now,
                   "finished_at": now, "updated_at": now}
            return self._stored(self.db.table("jobs").insert(row).last_pk)

    def learn_published(self, results: Iterable[tuple[str, str, str]]) -> int:
        """Record results found in the outbox, as (source, sha256, folder), whose bytes this
        database does not know (a new or reset one): a picture dropped again is then known, not
        made a second result. Returns how many were learnt."""
        known = {row[0] for row in self._query("select sha256 from jobs where state in (?, ?, ?)",
                                               [*ACTIVE, DONE])}
        found, learnt = list(results), 0  # read every job.json before taking the write lock
        with self._writing():
            for source, sha256, folder in found:
                if sha256 in known:  # done, or a job that published it just before a crash
                    continue
                known.add(sha256)
                text, raw = _source_key(source)
                self.db.table("jobs").insert({
                    "source": text, "source_hex": raw, "sha256": sha256, "state": DONE,
                    "result_name": self._unique_name(Path(folder).name), "output": folder,
                    "finished_at": time.time(), "updated_at": time.time(),
                    "warnings": json.dumps(["learnt from the outbox: the job database was new"])})
                learnt += 1
        return learnt

    def enqueue_redo(self, source: str, sha256: str, size: int, result_name: str, redo_of: str,
                     preset: str | None, overrides: dict[str, Any]) -> Job:
        """A redo (issue 25): a queued job whose picture is the ``source.*`` of the result
        folder ``redo_of``, made with ``preset`` and ``overrides``. It is never anybody's
        duplicate (its bytes are a done job's on purpose) and has no file in the inbox.

        ``reconctl redo`` and recond-web call this beside the running daemon: one short write
        transaction, as safe beside the daemon's writes as theirs are beside each other."""
        now = time.time()
        text, raw = _source_key(source)
        with self._writing():
            row = {"source": text, "source_hex": raw, "sha256": sha256, "size": size,
                   "state": QUEUED, "result_name": self._unique_name(result_name),
                   "redo_of": redo_of, "preset": preset, "overrides": json.dumps(overrides),
                   "queued_at": now, "updated_at": now}
            return self._stored(self.db.table("jobs").insert(row).last_pk)

    def record_preset(self, job_id: int, preset: str | None) -> None:
        """The preset a starting job is made with (its inbox folder's, as the settings say now)."""
        with self._writing():
            self._set(job_id, preset=preset)

    def claim_next(self) -> Job | None:
        """Oldest queued job, now running (its attempt counted)."""
        now = time.time()
        with self._writing():
            job = self._first("state = ?", [QUEUED], order_by="id")
            if job is None:
                return None
            self._set(job.id, state=RUNNING, attempts=job.attempts + 1, started_at=now,
                      stage=None, progress=0.0, eta_s=None, error=None, part_in_daemon=1)
            return self._stored(job.id)

    def report_progress(self, job_id: int, stage: str, progress: float, eta_s: float | None,
                        stage_started_at: float | None = None, stage_expected_s: float | None = None) -> None:
        with self._writing():
            self._set(job_id, stage=stage, progress=progress, eta_s=eta_s,
                      stage_started_at=stage_started_at, stage_expected_s=stage_expected_s)

    def part_started(self, job_id: int, in_daemon: bool, stage: str | None = None) -> None:
        """A running job's next part was handed on: inside the daemon process or not, and the
        stage status shows until the part reports its own (e.g. waiting for a host process)."""
        changes: dict[str, Any] = {"part_in_daemon": int(in_daemon)}
        if stage is not None:
            changes |= {"stage": stage, "stage_started_at": None, "stage_expected_s": None}
        with self._writing():
            self._set(job_id, **changes)

    def finish(self, job_id: int, output: Path, warnings: list[str], sha256: str | None = None,
               owed: Iterable[Owed] = ()) -> None:
        """Done; ``sha256`` when the published bytes differ from the queued ones. ``owed``: the
        hook and webhook deliveries of its publish, recorded in the same transaction, so that
        a kill never leaves a job done whose hook nobody owes."""
        changes = {"sha256": sha256} if sha256 else {}
        with self._writing():
            self._owe(job_id, owed)
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

    def retry_later(self, job_id: int, reason: str) -> None:
        """Put a running job back, its attempt counted and ``reason`` shown until it runs again
        (a stage past its time limit: maybe the machine, maybe the picture)."""
        with self._writing():
            self._set(job_id, state=QUEUED, error=display_name(reason), stage=None, progress=None,
                      eta_s=None, started_at=None)

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

        The crash counts against a job only when its part ran inside the daemon process: a job
        whose part ran in a host process (or on Ray) did not cause it, and a job whose result
        ``published`` says is complete goes back too without counting it (the worker then
        records it done). Returns (requeued, exhausted); the caller moves the exhausted jobs'
        files aside (``Worker.fail_job`` with ``job.error``).
        """
        requeued, exhausted = [], []
        with self._writing():
            for job in self._jobs_where("state = ?", [RUNNING]):
                not_its_crash = published(job) or job.part_in_daemon == 0
                if job.attempts >= max_attempts and not not_its_crash:
                    self._set(job.id, state=FAILED, finished_at=time.time(), error=(
                        f"recond stopped unexpectedly {job.attempts} times while processing "
                        f"this file (max_attempts = {max_attempts}); it may crash the pipeline"))
                    exhausted.append(self._stored(job.id))
                else:
                    attempts = job.attempts - 1 if not_its_crash else job.attempts
                    self._set(job.id, state=QUEUED, stage=None, progress=None, eta_s=None,
                              attempts=max(0, attempts), part_in_daemon=None)
                    requeued.append(self._stored(job.id))
        return requeued, exhausted

    # Owed deliveries: hooks and webhooks (recond/workflows/, issue 25).

    def owe(self, job_id: int, owed: Iterable[Owed]) -> None:
        """Record deliveries of one job's event (a failure: recorded after the job's move)."""
        with self._writing():
            self._owe(job_id, owed)

    def _owe(self, job_id: int, owed: Iterable[Owed]) -> None:
        now = time.time()
        for delivery in owed:
            self.db.execute(
                "insert or ignore into deliveries (event_id, event, channel, job_id, path, payload, "
                "attempts, created_at, next_at) values (?, ?, ?, ?, ?, ?, 0, ?, ?)",
                [uuid.uuid4().hex, delivery.event, delivery.channel, job_id, delivery.path,
                 delivery.payload, now, now])

    def due_deliveries(self, channel: str, now: float, limit: int = 10) -> list[Delivery]:
        """Owed deliveries of ``channel`` whose time has come, oldest first."""
        with self._lock:
            rows = list(self.db.table("deliveries").rows_where(
                "channel = ? and finished_at is null and next_at <= ?", [channel, now],
                order_by="next_at, id", limit=limit))
        return [Delivery(**row) for row in rows]

    def next_delivery_at(self, channel: str) -> float | None:
        """When the next owed delivery of ``channel`` is due (None: nothing owed)."""
        found = self._query("select min(next_at) from deliveries where channel = ? and "
                            "finished_at is null", [channel])
        return found[0][0] if found else None

    def delivery_tried(self, delivery_id: int, error: str, next_at: float | None) -> None:
        """A try that did not deliver: tried again at ``next_at``; None: given up."""
        with self._writing():
            self.db.execute(
                "update deliveries set attempts = attempts + 1, last_error = ?, next_at = ?, "
                "finished_at = ?, outcome = ? where id = ?",
                [error, next_at if next_at is not None else time.time(),
                 None if next_at is not None else time.time(),
                 None if next_at is not None else "gave up", delivery_id])

    def delivery_done(self, delivery_id: int, outcome: str, error: str | None = None) -> None:
        with self._writing():
            self.db.execute("update deliveries set attempts = attempts + 1, finished_at = ?, "
                            "outcome = ?, last_error = ? where id = ?",
                            [time.time(), outcome, error, delivery_id])

    def owed_counts(self) -> dict[str, int]:
        """Deliveries not yet done with, per channel ({"hook": n, "webhook": n})."""
        counts = {"hook": 0, "webhook": 0}
        if not self.db.table("deliveries").exists():  # a database from before issue 25, read only
            return counts
        for channel, number in self._query("select channel, count(*) from deliveries where "
                                           "finished_at is null group by channel"):
            counts[channel] = number
        return counts

    # Daemon state (one row), read by `reconctl status`.

    def daemon_started(self, pid: int) -> None:
        now = time.time()
        with self._writing():
            self.db.table("daemon").upsert({"id": 1, "pid": pid, "started_at": now, "heartbeat_at": now,
                                      "stopped_at": None, "model_status": "loading",
                                      "model_detail": None, "device": None, "dtype": None,
                                      "watcher_warnings": "[]", "worker_warning": None,
                                      "workers": "[]", "host_stops": "[]"}, pk="id")

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

    def _still_duplicate(self, copy: Job, result_holds: Callable[[str | None, str], bool]) -> bool:
        """Is the job this copy waits on still active, or done with a result holding its bytes?"""
        original = self.get(copy.duplicate_of) if copy.duplicate_of else None
        if original is None:
            return False
        return original.state in ACTIVE or (original.state == DONE and result_holds(original.output, copy.sha256))

    def _promote_duplicates(self, job_id: int) -> None:
        """Copies waiting on a job that will not publish their bytes are processed themselves."""
        self._promote(self.duplicates_of(job_id))

    def _promote(self, copies: list[Job]) -> None:
        for copy in copies:
            name = self._unique_name(result_name_for(copy.source_name, copy.queued_at or time.time()))
            self._set(copy.id, state=QUEUED, duplicate_of=None, output=None, finished_at=None,
                      result_name=name)


def _source_key(source: str) -> list[Any]:
    """(text, hex of its bytes or None): how a path is stored, exact even when it is not UTF-8."""
    text = display_name(source)
    raw = fs_bytes(source)
    return [text, None if raw == text.encode() else raw.hex()]


def _identity(db_path: Path) -> tuple[int, int]:
    status = os.stat(db_path)
    return status.st_dev, status.st_ino


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return "locked" in str(error) or "busy" in str(error)


def database_error(db_path: Path, error: BaseException) -> str:
    """One sentence naming the database file, what went wrong and what to do about it. Only a
    database SQLite reports corrupt is worth moving aside (its history goes with it)."""
    kind = getattr(error, "sqlite_errorname", "") or ""
    uid = os.getuid()
    if kind in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in str(error):
        return (f"the job database {db_path} is corrupt ({error}); move it aside (recond then "
                "starts an empty one and learns the results already in the outbox) or restore "
                "it from a backup")
    if kind.startswith("SQLITE_READONLY"):
        return (f"the job database {db_path} is read-only for user id {uid}: give this user write "
                "access to it, its -wal and -shm files and its folder, or point state_dir elsewhere")
    if kind.startswith("SQLITE_CANTOPEN") or isinstance(error, PermissionError):
        return (f"cannot open the job database {db_path} (user id {uid}): give this user "
                "read and write access to it and its folder, or point state_dir elsewhere")
    if kind == "SQLITE_FULL":
        return (f"the disk holding the job database {db_path} is full; free some space there "
                "and start recond again (the database is kept)")
    if isinstance(error, sqlite3.OperationalError) and _is_busy(error):
        return (f"the job database {db_path} is held by another process; stop it (or wait) "
                "and start recond again")
    return (f"the job database {db_path} could not be used just now ({error}); check its disk, "
            "then start recond again (the database is kept)")

