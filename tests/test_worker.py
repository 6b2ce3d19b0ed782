"""The worker against a real job database and real folders.

Most tests drive it with ``StandInPipeline``: a small real object with the Pipeline.run contract
(write the result's files, source.<ext> byte for byte and job.json, into the folder it is
handed; progress per stage), because the real pipeline would make these state-machine tests take
seconds each. Staging and publishing are the real ``recond.outbox.publish`` (tested in tests/outbox/);
the end-to-end tests in test_daemon_*.py run the real Pipeline.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpers.places import assert_in_one_place
from helpers.queueing import queue_file
from helpers.stand_in import StandInHandoff, StandInPipeline, sha256
from helpers.waiting import wait_for

from recond.config import ModelSettings, Settings
from recond.outbox import publish
from recond.pipeline.contract import SourcePicture
from recond.pipeline.progress import (
    DEFAULT_STAGE_SECONDS,
    expected_stage_seconds,
)
from recond.store import DONE, FAILED, QUEUED, Store
from recond.worker import Worker


def run_worker(settings: Settings, store: Store, pipeline: Any) -> Worker:
    worker = Worker(settings, store, pipeline_factory=lambda s: pipeline)
    worker.start()
    return worker


def test_success_publishes_the_folder_and_removes_the_original(settings: Settings) -> None:
    store = Store(settings.db_path)
    job_id = queue_file(settings, store, "kitchen/mug.jpg", b"mug bytes")
    worker = run_worker(settings, store, StandInPipeline())
    try:
        done = wait_for(lambda: (job := store.get(job_id)).state == DONE and job)
    finally:
        worker.stop()
    result = Path(done.output)
    assert (result / "source.jpg").read_bytes() == b"mug bytes"
    assert not (settings.inbox / "kitchen/mug.jpg").exists()
    assert done.warnings == ["stand-in warning"] and done.progress == 1.0


def test_failure_moves_the_original_to_failed_with_a_note(settings: Settings) -> None:
    from recond.errors import InputError

    store = Store(settings.db_path)
    job_id = queue_file(settings, store, "broken.jpg", b"not a picture")
    worker = run_worker(settings, store, StandInPipeline(InputError("broken.jpg is not a picture")))
    try:
        failed = wait_for(lambda: (job := store.get(job_id)).state == FAILED and job)
    finally:
        worker.stop()
    kept = settings.inbox.resolve() / "failed" / "broken.jpg"
    assert failed.error == "broken.jpg is not a picture" and failed.output == str(kept)
    assert kept.read_bytes() == b"not a picture"
    assert "broken.jpg is not a picture" in (kept.parent / "broken.jpg.error.txt").read_text()
    assert not list(settings.outbox.glob("[!.]*"))  # nothing half-written published


def test_unexpected_error_is_recorded_with_its_type(settings: Settings) -> None:
    store = Store(settings.db_path)
    job_id = queue_file(settings, store, "a.jpg")
    worker = run_worker(settings, store, StandInPipeline(MemoryError("out of memory in texture")))
    try:
        failed = wait_for(lambda: (job := store.get(job_id)).state == FAILED and job)
    finally:
        worker.stop()
    assert failed.error == "MemoryError: out of memory in texture"


def test_missing_model_keeps_jobs_queued_until_reload_brings_it(settings: Settings) -> None:
    store = Store(settings.db_path)
    store.daemon_started(1)
    job_id = queue_file(settings, store, "a.jpg")
    stand_in = StandInPipeline()
    attempts = []

    def factory(current: Settings) -> StandInPipeline:
        from recond.triposr.model import TripoSR

        attempts.append(current.model)
        if current.model == "stand-in":
            return stand_in
        return TripoSR.from_pretrained(current.model)  # a missing folder: the real ModelLoadError

    missing = settings.model_copy(update={"model": str(settings.state_dir / "no-such-model")})
    worker = Worker(missing, store, pipeline_factory=factory)
    worker.start()
    try:
        # Retried every model_retry_seconds; each try shows "loading" until it has failed.
        wait_for(lambda: len(attempts) >= 2 and store.daemon_state()["model_status"] == "missing")
        state = store.daemon_state()
        assert state["model_status"] == "missing" and "RECOND_MODEL" in state["model_detail"]
        assert store.get(job_id).state == QUEUED
        worker.reload(settings.model_copy(update={"model": "stand-in"}))
        wait_for(lambda: store.get(job_id).state == DONE)
    finally:
        worker.stop()
    assert store.daemon_state()["model_status"] == "ready"
    assert store.daemon_state()["dtype"] == "float32 (stand-in)"


def test_stopping_mid_job_requeues_it_without_counting_the_attempt(settings: Settings) -> None:
    store = Store(settings.db_path)
    job_id = queue_file(settings, store, "slow.jpg")
    pipeline = StandInPipeline(stage_seconds=0.3)
    worker = run_worker(settings, store, pipeline)
    pipeline.started.wait(5)
    worker.stop()
    job = store.get(job_id)
    assert job.state == QUEUED and job.attempts == 0
    assert (settings.inbox / "slow.jpg").exists() and not list(settings.outbox.glob("[!.]*"))


def test_result_published_before_a_crash_is_not_made_twice(settings: Settings) -> None:
    store = Store(settings.db_path)
    job_id = queue_file(settings, store, "a.jpg")
    job = store.claim_next()
    pipeline = StandInPipeline()
    worker = Worker(settings, store, pipeline_factory=lambda s: pipeline)
    published = settings.outbox / job.result_name  # the crash came after the rename
    published.mkdir()
    pipeline.run(SourcePicture("a.jpg", (settings.inbox / "a.jpg").read_bytes()), published)
    pipeline.runs.clear()
    publish.staging_dir(settings.outbox, job.result_name, f"{worker.owner}-{job.id}").mkdir()
    worker.process(job)
    assert store.get(job_id).state == DONE and pipeline.runs == []
    assert not (settings.inbox / "a.jpg").exists()


def test_partial_folder_left_by_a_crash_is_cleared_before_the_rerun(settings: Settings) -> None:
    store = Store(settings.db_path)
    queue_file(settings, store, "a.jpg")
    job = store.claim_next()
    worker = Worker(settings, store, pipeline_factory=lambda s: StandInPipeline())
    leftover = publish.staging_dir(settings.outbox, job.result_name, f"{worker.owner}-{job.id}")
    leftover.mkdir()
    (leftover / "mesh.obj").write_text("half")
    worker.process(job)
    assert store.get(job.id).state == DONE
    assert [p.name for p in settings.outbox.iterdir() if p.is_dir()] == [job.result_name]


def test_job_waits_instead_of_failing_while_the_inbox_share_is_gone(settings: Settings) -> None:
    store = Store(settings.db_path)
    job_id = queue_file(settings, store, "a.jpg")
    shutil.rmtree(settings.inbox)
    pipeline = StandInPipeline()
    worker = Worker(settings, store, pipeline_factory=lambda s: pipeline)
    worker.process(store.claim_next())
    job = store.get(job_id)
    assert job.state == QUEUED and job.attempts == 0 and pipeline.runs == []


def test_reload_rebuilds_the_warm_pipeline_only_when_a_model_setting_changed(settings: Settings) -> None:
    store = Store(settings.db_path)
    built: list[tuple[str, StandInPipeline]] = []

    def factory(current: ModelSettings) -> StandInPipeline:
        built.append((current.model, StandInPipeline()))
        return built[-1][1]

    worker = Worker(settings, store, pipeline_factory=factory)
    worker.start()
    try:
        wait_for(lambda: len(built) == 1)
        worker.reload(settings.model_copy(update={"polling": True, "settle_seconds": 9.0}))
        wait_for(lambda: worker.settings.polling)
        # A job setting: a load it wrongly caused would come before the model change below.
        worker.reload(settings.model_copy(update={"mc_resolution": 64}))
        wait_for(lambda: worker.settings.mc_resolution == 64)
        worker.reload(settings.model_copy(update={"mc_resolution": 64, "model": "another"}))
        wait_for(lambda: len(built) == 2)
        job_id = queue_file(settings, store, "a.jpg")
        worker.wake()
        wait_for(lambda: store.get(job_id).state == DONE)
    finally:
        worker.stop()
    assert [model for model, _ in built] == [settings.model, "another"]
    assert [job.mc_resolution for job in built[1][1].job_settings] == [64]  # each job gets its settings


def test_job_that_keeps_crashing_the_daemon_ends_in_failed_with_its_file_kept(settings: Settings) -> None:
    store = Store(settings.db_path)
    job_id = queue_file(settings, store, "poison.jpg", b"crashes the pipeline")
    for _ in range(settings.max_attempts):  # each claim followed by a "crash" and a restart
        store.claim_next()
        _, exhausted = store.recover_after_crash(settings.max_attempts)
    assert [job.id for job in exhausted] == [job_id]
    Worker(settings, store).fail_job(exhausted[0], exhausted[0].error)
    job = store.get(job_id)
    kept = settings.inbox.resolve() / "failed" / "poison.jpg"
    assert job.state == FAILED and job.output == str(kept) and kept.read_bytes() == b"crashes the pipeline"
    assert f"{settings.max_attempts} times" in (kept.parent / "poison.jpg.error.txt").read_text()


def test_duplicate_waiting_on_a_job_is_removed_once_its_result_is_published(settings: Settings) -> None:
    store = Store(settings.db_path)
    job_id = queue_file(settings, store, "a.jpg", b"same bytes")
    (settings.inbox / "backup").mkdir()
    (settings.inbox / "backup" / "copy.jpg").write_bytes(b"same bytes")
    copy, _ = store.enqueue("backup/copy.jpg", sha256(b"same bytes"), 10, "t_copy")
    assert (settings.inbox / "backup" / "copy.jpg").exists()
    worker = run_worker(settings, store, StandInPipeline())
    try:
        done = wait_for(lambda: (job := store.get(job_id)).state == DONE and job)
    finally:
        worker.stop()
    assert (Path(done.output) / "source.jpg").read_bytes() == b"same bytes"
    assert not (settings.inbox / "backup").exists()  # emptied by recond: removed (issue 8)
    assert store.get(copy.id).output == done.output and settings.inbox.is_dir()


class StoreRefusingPipeline(StandInPipeline):
    """Leaves the job database refusing every write (SQLite's query_only, as a full state disk
    does) as its device part ends, before the result is staged, until ``allow_writes`` is set."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store, self.refusing, self.allow_writes = store, threading.Event(), threading.Event()

    def device_part(self, source: SourcePicture, job: Any = None, report: Any = None) -> StandInHandoff:
        result = super().device_part(source, job, report)
        if not self.refusing.is_set():
            self.store.db.execute("PRAGMA query_only = ON")
            self.refusing.set()
            threading.Thread(target=self._writable_again, daemon=True).start()
        return result

    def _writable_again(self) -> None:
        self.allow_writes.wait()
        with self.store._lock:  # the store's connection, shared by threads under its lock
            self.store.db.execute("PRAGMA query_only = OFF")


def test_a_result_the_store_could_not_record_is_published_once_never_left_running(
        settings: Settings) -> None:
    store = Store(settings.db_path)
    job_id = queue_file(settings, store, "mug.jpg", b"mug bytes")
    pipeline = StoreRefusingPipeline(store)
    worker = run_worker(settings, store, pipeline)
    try:
        pipeline.refusing.wait(10)
        time.sleep(3)  # the worker tries to record it, and to put it back, and cannot
        assert store.get(job_id).state == "running"
        pipeline.allow_writes.set()
        done = wait_for(lambda: (job := store.get(job_id)).state == DONE and job, timeout=20)
    finally:
        pipeline.allow_writes.set()
        worker.stop()
    assert len(pipeline.runs) == 1  # recorded from the published result, not run again
    assert [p.name for p in settings.outbox.iterdir() if p.is_dir()] == [Path(done.output).name]
    assert_in_one_place(b"mug bytes", settings.inbox, settings.outbox).startswith("result")
def test_the_worker_keeps_each_jobs_stage_seconds_for_the_next_etas(settings: Settings) -> None:
    store = Store(settings.db_path)
    job_id = queue_file(settings, store, "a.jpg")
    worker = run_worker(settings, store, StandInPipeline())
    try:
        wait_for(lambda: store.get(job_id).state == DONE)
    finally:
        worker.stop()
    learnt = expected_stage_seconds(settings.state_dir)
    assert learnt["mesh"] == pytest.approx((DEFAULT_STAGE_SECONDS["mesh"] + 0.01) / 2, abs=1e-3)
