"""The inbox watcher with real watchdog observers on real folders and a real job database."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.settings import TEST_TIMINGS, settings_for
from helpers.waiting import wait_for
from watchdog.observers.api import EventEmitter

from recond.inbox import intake as intake_module
from recond.inbox.intake import Intake
from recond.store import DUPLICATE, Store

SETTLE = TEST_TIMINGS["settle_seconds"]


@pytest.fixture(params=["native", "polling"])
def intake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Intake]:
    settings = settings_for(tmp_path, polling=request.param == "polling")
    watcher = Intake(settings, Store(settings.db_path))
    watcher.start()
    yield watcher
    watcher.stop()


def sources(intake: Intake) -> list[str]:
    return sorted(job.source for job in intake.store.jobs())


def write_slowly(path: Path, data: bytes, chunks: int = 4, pause: float = SETTLE / 2) -> None:
    with path.open("wb") as stream:
        for index in range(chunks):
            stream.write(data[index * len(data) // chunks:(index + 1) * len(data) // chunks])
            stream.flush()
            time.sleep(pause)


def test_half_copied_file_waits_until_stable(intake: Intake) -> None:
    target = intake.inbox / "photo.jpg"
    write_slowly(target, b"x" * 40_000, chunks=5)
    assert sources(intake) == []  # a chunk every half settle period: never stable long enough
    job = wait_for(lambda: intake.store.jobs())[0]
    assert job.source == "photo.jpg" and job.size == 40_000
    assert job.queued_at - target.stat().st_mtime >= SETTLE * 0.9


def test_temporary_name_is_ignored_until_renamed_into_place(intake: Intake) -> None:
    partial = intake.inbox / "photo.jpg.part"
    write_slowly(partial, b"y" * 1000, chunks=2)
    for junk in (".hidden.jpg", "~$lock.jpg", "a.crdownload", "b.tmp", "Thumbs.db", "._photo.jpg"):
        (intake.inbox / junk).write_bytes(b"junk")
    time.sleep(SETTLE * 3)
    assert sources(intake) == []
    partial.rename(intake.inbox / "photo.jpg")
    wait_for(lambda: sources(intake) == ["photo.jpg"])


def test_subfolders_are_watched_and_named_but_junk_folders_and_failed_are_not(intake: Intake) -> None:
    for folder in ("kitchen/shelf", "@eaDir", "__MACOSX", ".stfolder", "failed"):
        (intake.inbox / folder).mkdir(parents=True)
        (intake.inbox / folder / "mug.png").write_bytes(folder.encode())
    wait_for(lambda: sources(intake) == ["kitchen/shelf/mug.png"])
    time.sleep(SETTLE * 2)
    assert sources(intake) == ["kitchen/shelf/mug.png"]
    assert intake.store.jobs()[0].result_name.endswith("_kitchen_shelf_mug")


def test_folder_moved_in_brings_its_files(intake: Intake, tmp_path: Path) -> None:
    outside = tmp_path / "camera"
    outside.mkdir()
    (outside / "one.jpg").write_bytes(b"1")
    (outside / "two.jpg").write_bytes(b"2")
    outside.rename(intake.inbox / "camera")
    wait_for(lambda: sources(intake) == ["camera/one.jpg", "camera/two.jpg"])


def test_byte_identical_copy_is_recorded_as_duplicate_and_kept_until_a_result_holds_it(intake: Intake) -> None:
    (intake.inbox / "a.jpg").write_bytes(b"same bytes")
    first = wait_for(lambda: intake.store.jobs())[0]
    (intake.inbox / "copy.jpg").write_bytes(b"same bytes")
    copy = wait_for(lambda: [j for j in intake.store.jobs() if j.source == "copy.jpg"])[0]
    assert copy.state == DUPLICATE and copy.duplicate_of == first.id
    # Removed only once the original's result is published and holds these bytes (issue 11);
    # test_worker's test_duplicate_waiting_on_a_job_is_removed_once_its_result_is_published.
    time.sleep(SETTLE * 2)
    assert (intake.inbox / "copy.jpg").read_bytes() == b"same bytes"
    assert (intake.inbox / "a.jpg").exists()


def test_startup_scan_enqueues_files_already_waiting_once(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    (settings.inbox / "early.jpg").write_bytes(b"early")
    store = Store(settings.db_path)
    for _ in range(2):  # a restart must not queue the same waiting file twice
        watcher = Intake(settings, store)
        watcher.start()
        wait_for(lambda: store.counts()["queued"] == 1)
        time.sleep(SETTLE * 2)
        watcher.stop()
    assert [job.source for job in store.jobs()] == ["early.jpg"]


def test_rescan_catches_a_file_the_watcher_missed(tmp_path: Path) -> None:
    # A polling watcher that effectively never polls stands in for one that misses events.
    settings = settings_for(tmp_path, polling=True, poll_interval=3600, rescan_seconds=0.5)
    watcher = Intake(settings, Store(settings.db_path))
    watcher.start()
    try:
        (settings.inbox / "missed.jpg").write_bytes(b"missed")
        wait_for(lambda: sources(watcher) == ["missed.jpg"], tick=watcher.supervise)
    finally:
        watcher.stop()


@pytest.mark.parametrize("polling", [True, False], ids=["polling", "native"])
def test_watcher_is_rearmed_after_the_inbox_vanishes_and_returns(tmp_path: Path, polling: bool) -> None:
    settings = settings_for(tmp_path, polling=polling)
    watcher = Intake(settings, Store(settings.db_path))
    watcher.start()
    try:
        shutil.rmtree(settings.inbox)
        wait_for(lambda: any("missing" in w for w in watcher.warnings), tick=watcher.supervise)
        settings.inbox.mkdir()
        wait_for(lambda: any("re-arming" in w for w in watcher.warnings), tick=watcher.supervise)
        (settings.inbox / "after.jpg").write_bytes(b"after")
        wait_for(lambda: sources(watcher) == ["after.jpg"])
    finally:
        watcher.stop()


def test_dead_emitter_thread_is_detected_and_rearmed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, polling=True)
    watcher = Intake(settings, Store(settings.db_path))
    watcher.start()
    try:
        emitters = [thread for thread in threading.enumerate() if isinstance(thread, EventEmitter)
                    and thread.watch.path == str(watcher.inbox)]  # found as threads, not via Intake
        assert emitters
        for emitter in emitters:
            emitter.stop()  # what watchdog's polling emitter does on its own (issue #1065)
        wait_for(lambda: any("emitter thread died" in w for w in watcher.warnings), tick=watcher.supervise)
        (settings.inbox / "later.jpg").write_bytes(b"later")
        wait_for(lambda: sources(watcher) == ["later.jpg"])
    finally:
        watcher.stop()


def test_reading_an_inbox_file_brings_the_watcher_no_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """recond reads each file it takes (its hash, the copy into the result); by default the kernel
    reports every open and close, two events a read for watchdog to parse and for the kernel's queue
    to hold. The watcher asks only for the events intake acts on, so reading costs none, while a
    change to the file still arrives."""
    dispatched: list[str] = []
    original = intake_module._Events.dispatch
    monkeypatch.setattr(intake_module._Events, "dispatch",
                        lambda handler, event: (dispatched.append(event.event_type), original(handler, event))[1])
    settings = settings_for(tmp_path)
    watcher = Intake(settings, Store(settings.db_path))
    watcher.start()
    try:
        target = watcher.inbox / "photo.jpg"
        target.write_bytes(b"z" * 1000)
        wait_for(lambda: watcher.store.jobs())
        time.sleep(SETTLE)
        dispatched.clear()
        for _ in range(50):
            target.read_bytes()
        time.sleep(SETTLE * 2)
        assert dispatched == []
        with target.open("ab") as stream:
            stream.write(b"more")
        wait_for(lambda: "modified" in dispatched)
    finally:
        watcher.stop()
