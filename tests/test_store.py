"""The job store on a real SQLite file: states, duplicates, crash recovery, daemon heartbeat."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from recond.store import DONE, DUPLICATE, FAILED, QUEUED, RUNNING, Store, StoreError, database_error


def test_jobs_are_claimed_oldest_first_and_counted(tmp_path: Path) -> None:
    store = Store(tmp_path / "recond.db")
    first, _ = store.enqueue("a.jpg", "aa", 10, "t_a")
    second, _ = store.enqueue("b.jpg", "bb", 10, "t_b")
    claimed = store.claim_next()
    assert claimed.id == first.id and claimed.state == RUNNING and claimed.attempts == 1
    assert store.counts() == {QUEUED: 1, RUNNING: 1, DONE: 0, FAILED: 0, DUPLICATE: 0}
    assert store.claim_next().id == second.id
    assert store.claim_next() is None


def test_same_path_redetected_while_active_is_not_a_second_job(tmp_path: Path) -> None:
    store = Store(tmp_path / "recond.db")
    job, created = store.enqueue("sub/a.jpg", "aa", 10, "t_sub_a")
    again, created_again = store.enqueue("sub/a.jpg", "changed", 11, "t_sub_a")
    assert created and not created_again and again.id == job.id
    store.claim_next()
    assert store.enqueue("sub/a.jpg", "aa", 10, "t_sub_a")[1] is False
    assert store.counts()[QUEUED] + store.counts()[RUNNING] == 1


def test_identical_bytes_to_a_done_job_become_a_duplicate_pointing_at_its_result(tmp_path: Path) -> None:
    store = Store(tmp_path / "recond.db")
    job, _ = store.enqueue("a.jpg", "same", 10, "t_a")
    store.claim_next()
    store.finish(job.id, tmp_path / "out" / "t_a", ["a warning"])
    copy, created = store.enqueue("copy of a.jpg", "same", 10, "t_copy")
    assert created and copy.state == DUPLICATE and copy.duplicate_of == job.id
    assert copy.output == str(tmp_path / "out" / "t_a") and copy.result_name is None
    assert store.get(job.id).warnings == ["a warning"]


def test_identical_bytes_are_reprocessed_when_the_earlier_result_was_deleted(tmp_path: Path) -> None:
    store = Store(tmp_path / "recond.db")
    job, _ = store.enqueue("a.jpg", "same", 10, "t_a")
    store.claim_next()
    store.finish(job.id, tmp_path / "gone", [])
    again, _ = store.enqueue("a.jpg", "same", 10, "t_a", result_holds=lambda output, sha256: False)
    assert again.state == QUEUED and again.result_name == "t_a-2"


def test_duplicate_of_a_running_job_gets_its_output_when_it_finishes(tmp_path: Path) -> None:
    store = Store(tmp_path / "recond.db")
    job, _ = store.enqueue("a.jpg", "same", 10, "t_a")
    store.claim_next()
    copy, _ = store.enqueue("b.jpg", "same", 10, "t_b")
    assert copy.state == DUPLICATE and copy.output is None
    store.finish(job.id, tmp_path / "t_a", [])
    assert store.get(copy.id).output == str(tmp_path / "t_a")


def test_crash_leftover_running_job_is_requeued_then_fails_after_max_attempts(tmp_path: Path) -> None:
    db = tmp_path / "recond.db"
    job, _ = Store(db).enqueue("a.jpg", "aa", 10, "t_a")
    for attempt in (1, 2):
        store = Store(db)  # a fresh start after each "crash"
        assert store.claim_next().attempts == attempt
        requeued, exhausted = Store(db).recover_after_crash(max_attempts=2)
        if attempt == 1:
            assert [j.id for j in requeued] == [job.id] and not exhausted
    assert not requeued and [j.id for j in exhausted] == [job.id]
    failed = Store(db).get(job.id)
    assert failed.state == FAILED and "2 times" in failed.error


def test_clean_requeue_does_not_count_an_attempt(tmp_path: Path) -> None:
    store = Store(tmp_path / "recond.db")
    job, _ = store.enqueue("a.jpg", "aa", 10, "t_a")
    store.claim_next()
    store.requeue(job.id)
    requeued = store.get(job.id)
    assert requeued.state == QUEUED and requeued.attempts == 0 and requeued.started_at is None


def test_state_changes_are_visible_to_another_connection_at_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "recond.db")
    job, _ = store.enqueue("a.jpg", "aa", 10, "t_a")
    store.claim_next()
    store.report_progress(job.id, "texture", 0.5, 12.0)
    reader = sqlite3.connect(tmp_path / "recond.db")
    assert reader.execute("select state, stage, progress from jobs").fetchone() == (RUNNING, "texture", 0.5)
    assert reader.execute("pragma journal_mode").fetchone() == ("wal",)


def test_daemon_row_records_pid_model_and_watcher_warnings(tmp_path: Path) -> None:
    store = Store(tmp_path / "recond.db")
    assert store.daemon_state() is None
    store.daemon_started(4242)
    store.daemon_update(model_status="missing", model_detail="no weights",
                        watcher_warnings=["inbox missing"])
    state = Store(tmp_path / "recond.db").daemon_state()
    assert state["pid"] == 4242 and state["model_status"] == "missing"
    assert state["watcher_warnings"] == ["inbox missing"]


def test_only_a_corrupt_database_is_to_be_moved_aside(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this was never a database " * 200)
    with pytest.raises(StoreError) as refused:
        Store(corrupt)
    assert "corrupt" in str(refused.value) and "move it aside" in str(refused.value)
    assert str(refused.value).count(". ") == 0  # one sentence

    store = Store(tmp_path / "recond.db")
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")  # a real SQLITE_FULL, as on a full disk
    with pytest.raises(sqlite3.OperationalError) as full:
        for number in range(1000):
            store.enqueue(f"{number}.png", f"{number:064x}", 1, f"r{number}")
    sentence = database_error(store.db_path, full.value)
    assert "full" in sentence and "move it aside" not in sentence and "is kept" in sentence


def test_a_reader_answers_at_once_while_another_process_holds_the_database(tmp_path: Path) -> None:
    Store(tmp_path / "recond.db").enqueue("mug.png", "a" * 64, 1, "mug")
    holder = sqlite3.connect(tmp_path / "recond.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        reader = Store(tmp_path / "recond.db", reader=True)
        assert reader.counts()[QUEUED] == 1 and reader.held_by_another()
        assert time.monotonic() - started < 1.0
    finally:
        holder.execute("ROLLBACK")
    assert not reader.held_by_another()


# Owed deliveries and redo jobs (issue 25).

def test_a_job_recorded_done_twice_owes_its_hook_and_webhook_once(tmp_path: Path) -> None:
    from recond.store import Owed

    store = Store(tmp_path / "recond.db")
    job, _ = store.enqueue("a.jpg", "aa", 1, "r-a")
    owed = [Owed("published", "hook", "/out/r-a", "{}"), Owed("published", "webhook", "/out/r-a", "{}")]
    store.finish(job.id, Path("/out/r-a"), [], owed=owed)
    store.finish(job.id, Path("/out/r-a"), [], owed=owed)  # a restart found it published again
    assert store.owed_counts() == {"hook": 1, "webhook": 1}
    (webhook,) = store.due_deliveries("webhook", time.time())
    store.delivery_tried(webhook.id, "refused", next_at=time.time() + 60)
    assert store.due_deliveries("webhook", time.time()) == []
    assert store.next_delivery_at("webhook") > time.time()
    store.delivery_tried(webhook.id, "refused", next_at=None)  # given up
    (hook,) = store.due_deliveries("hook", time.time())
    store.delivery_done(hook.id, "ran")
    assert store.owed_counts() == {"hook": 0, "webhook": 0}
    reopened = Store(tmp_path / "recond.db", reader=True)
    assert reopened.owed_counts() == {"hook": 0, "webhook": 0}


def test_a_redo_is_nobodys_duplicate_and_no_inbox_path(tmp_path: Path) -> None:
    store = Store(tmp_path / "recond.db")
    original, _ = store.enqueue("chair.png", "cc", 5, "r-chair")
    store.claim_next()
    store.finish(original.id, tmp_path / "r-chair", [])
    redo = store.enqueue_redo("chair.png", "cc", 5, "r-redo", "r-chair", "quick", {"render_views": 3})
    assert redo.state == QUEUED and redo.duplicate_of is None
    assert (redo.redo_of, redo.preset, redo.overrides) == ("r-chair", "quick", {"render_views": 3})
    assert store.active_sources() == set()  # a rescan never skips an inbox chair.png for it
    dropped, created = store.enqueue("chair.png", "dd", 6, "r-new")
    assert created and dropped.id != redo.id  # a new drop of the same name is its own job
