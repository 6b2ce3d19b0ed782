"""Reading a dropped file without trusting it: FIFOs, sockets, devices and links never block intake,
and a file too big or too slow to read is set aside unread while the others run."""

from __future__ import annotations

import os
import socket
import stat
import time

import pytest
from recond.config import Settings
from recond.inbox import dropped
from recond.store import DONE, FAILED, Store
from recond.worker import Worker

from helpers.places import assert_in_one_place
from helpers.running import running, states
from helpers.settings import TEST_TIMINGS
from helpers.stand_in import StandInPipeline, sha256
from helpers.waiting import wait_for


SETTLE = TEST_TIMINGS["settle_seconds"]
def test_fifo_socket_device_and_device_link_never_block_intake(settings: Settings) -> None:
    inbox = settings.inbox
    os.mkfifo(inbox / "x.png")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(inbox / "socket.png"))
    os.mknod(inbox / "zero.png", 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # what /dev/zero is
    (inbox / "dev-zero.png").symlink_to("/dev/zero")
    try:
        with running(settings) as (store, intake, _):
            (inbox / "real.png").write_bytes(b"a real picture")
            wait_for(lambda: states(store) == {"real.png": DONE})
            time.sleep(SETTLE * 2)
            assert states(store) == {"real.png": DONE} and intake.idle()
            warnings = [w for w in intake.warnings if "dev-zero.png" in w]
            intake.scan()
            time.sleep(SETTLE)
            assert len(warnings) == 1 and "symlink" in warnings[0]
            assert [w for w in intake.warnings if "dev-zero.png" in w] == warnings  # once
    finally:
        listener.close()
    assert assert_in_one_place(b"a real picture", inbox, settings.outbox).startswith("result")


def test_one_terabyte_sparse_file_is_set_aside_unread_and_the_others_run(settings: Settings) -> None:
    pictures = {"a.png": b"first picture", "b.png": b"second picture"}
    with running(settings) as (store, intake, _):
        (settings.inbox / "a.png").write_bytes(pictures["a.png"])
        os.truncate(os.open(settings.inbox / "huge.png", os.O_CREAT | os.O_WRONLY, 0o644), 1 << 40)
        (settings.inbox / "b.png").write_bytes(pictures["b.png"])
        wait_for(lambda: states(store) == {"a.png": DONE, "huge.png": FAILED, "b.png": DONE}, timeout=30)
        huge = store.jobs(FAILED)[0]
        assert "max_file_bytes" in huge.error and huge.output.endswith("failed/huge.png")
        assert sum("huge.png set aside" in warning for warning in intake.warnings) == 1
    assert (settings.inbox / "failed" / "huge.png").stat().st_size == 1 << 40
    assert (settings.inbox / "failed" / "huge.png.error.txt").is_file()
    for data in pictures.values():
        assert assert_in_one_place(data, settings.inbox, settings.outbox).startswith("result")


def test_file_slower_to_read_than_the_bound_is_set_aside_and_the_others_keep_their_order(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # The bound shrunk to nothing stands in for a share serving one file at a crawl: any file
    # longer than one read block (1 MiB) is then "slower than READ_SECONDS".
    monkeypatch.setattr(dropped, "READ_SECONDS", 0.0)
    slow = os.urandom(3 * dropped.BLOCK_BYTES)
    pictures = {"a.png": b"first picture", "b.png": b"second picture"}
    with running(settings) as (store, intake, _):
        (settings.inbox / "a.png").write_bytes(pictures["a.png"])
        (settings.inbox / "slow.png").write_bytes(slow)
        (settings.inbox / "b.png").write_bytes(pictures["b.png"])
        wait_for(lambda: states(store) == {"a.png": DONE, "slow.png": FAILED, "b.png": DONE})
        assert "took over" in store.jobs(FAILED)[0].error
        assert any("slow.png set aside" in warning for warning in intake.warnings)
        done = sorted(store.jobs(DONE), key=lambda job: job.id)
        assert [job.source for job in done] == ["a.png", "b.png"]
        assert done[0].finished_at <= done[1].started_at
    assert assert_in_one_place(slow, settings.inbox, settings.outbox) == "failed failed/slow.png"
    for data in pictures.values():
        assert assert_in_one_place(data, settings.inbox, settings.outbox).startswith("result")


def test_worker_refuses_a_file_grown_past_the_limit_from_its_size(settings: Settings) -> None:
    store = Store(settings.db_path)
    (settings.inbox / "a.png").write_bytes(b"small at first")
    job, _ = store.enqueue("a.png", sha256(b"small at first"), 14, "t_a")
    os.truncate(settings.inbox / "a.png", 1 << 40)
    pipeline = StandInPipeline()
    worker = Worker(settings, store, pipeline_factory=lambda s: pipeline)
    started = time.monotonic()
    worker.process(store.claim_next())
    assert time.monotonic() - started < 5  # not one terabyte read: refused from fstat
    ended = store.get(job.id)
    assert ended.state == FAILED and "max_file_bytes" in ended.error and pipeline.runs == []
    assert (settings.inbox / "failed" / "a.png").stat().st_size == 1 << 40


