"""The inbox watcher under pressure, with a real daemon: an overflowing inotify queue loses no file, and
folders past the inotify watch limit are reported and polled."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from helpers.installation import log_events, queued, wait_until, wait_until_watching, without_model
from helpers.places import assert_each_in_one_place


@pytest.mark.slow
def test_10000_files_dropped_while_events_overflow_are_all_queued_within_a_minute(tmp_path: Path) -> None:
    installation = without_model(tmp_path)
    try:
        installation.start()
        wait_until_watching(installation)
        # Frozen, recond reads no events: 10,000 files make ~30,000 (create, modify, close), past
        # the kernel's queue of fs.inotify.max_queued_events (16,384 here), which overflows.
        installation.process.send_signal(signal.SIGSTOP)
        pictures = [b"%05d" % number for number in range(10_000)]
        for number, data in enumerate(pictures):
            (installation.inbox / f"p{number:05d}.png").write_bytes(data)
        installation.process.send_signal(signal.SIGCONT)
        seconds = wait_until(lambda: queued(installation) == len(pictures), 60, installation)
        print(f"10,000 files queued {seconds:.1f} s after the watcher woke")
        assert any("overflow" in e["event"] for e in log_events(installation))
        assert installation.stop() == 0
        assert_each_in_one_place(pictures, installation.inbox, installation.outbox)
    finally:
        installation.stop()


def test_folders_past_the_inotify_watch_limit_are_reported_and_polled(tmp_path: Path) -> None:
    installation = without_model(tmp_path)
    folders = ["a", "b", "c", "d", "e", "f"]
    for folder in folders:
        (installation.inbox / folder).mkdir()
    # A user namespace of its own has its own watch limit: 3 watches for the inbox and six folders.
    limited = ("unshare", "--user", "--map-root-user", "sh", "-c",
               'echo 3 > /proc/sys/user/max_inotify_watches && exec "$@"', "sh")
    try:
        installation.start(wrapper=limited)
        status = installation.wait(lambda s: any("watch limit" in w for w in s["daemon"]["watcher_warnings"]))
        assert any("polled" in w for w in status["daemon"]["watcher_warnings"])
        assert any("watch limit" in e["event"] for e in log_events(installation))
        pictures = [folder.encode() * 3 for folder in folders]
        for folder, data in zip(folders, pictures):
            (installation.inbox / folder / "mug.png").write_bytes(data)
        # Well before the 300 s rescan: the unwatched folders are polled.
        wait_until(lambda: queued(installation) == len(folders), 20, installation)
        assert installation.stop() == 0
        assert_each_in_one_place(pictures, installation.inbox, installation.outbox)
    finally:
        installation.stop()
