"""Issue 27, item 1: a folder recond did not start with is never taken silently.

Real bind mounts (lazily unmounted mid-queue, as `umount -l` does to a share), real markers
left under them, a real `reconctl adopt`. The worker runs ``StandInPipeline`` (test_worker.py):
no model is needed to tell where a result lands. Each test ends by checking that every
picture's bytes lie in exactly one place.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from click.testing import CliRunner
from helpers.places import assert_each_in_one_place
from helpers.settings import settings_for
from helpers.waiting import wait_for
from helpers.privileged import mounted
from helpers.running import running, states
from helpers.stand_in import StandInPipeline

from recond.cli import cli
from recond.config import Settings
from recond.shares.identity import MARKER_NAME, FolderIdentity
from recond.store import DONE, QUEUED, Store
from recond.worker import Worker


def visible(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))


def reconctl(settings: Settings, *arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(arguments), env={
        "RECOND_INBOX": str(settings.inbox), "RECOND_OUTBOX": str(settings.outbox),
        "RECOND_STATE_DIR": str(settings.state_dir)})
    return result.exit_code, result.output


def old_marker_in(folder: Path) -> None:
    """The marker an earlier run left in a local folder, before a share was mounted over it."""
    (folder / MARKER_NAME).write_text("0123456789abcdef0123456789abcdef\n", encoding="ascii")


def test_share_unmounted_over_an_old_marker_publishes_nothing_under_the_mount_point(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    settings = settings_for(tmp_path)
    old_marker_in(settings.outbox)
    pictures = {f"{name}.png": f"picture {name}".encode() for name in "abcde"}
    pipeline = StandInPipeline(stage_seconds=0.05)
    with mounted("--bind", str(share), target=settings.outbox):
        with running(settings, pipeline) as (store, _, worker):
            (settings.inbox / "a.png").write_bytes(pictures["a.png"])
            wait_for(lambda: states(store) == {"a.png": DONE})
            for name in ("b.png", "c.png", "d.png", "e.png"):
                (settings.inbox / name).write_bytes(pictures[name])
            pipeline.started.clear()
            pipeline.started.wait(10)
            subprocess.run(["umount", "-l", str(settings.outbox)], check=True)  # the share drops away
            wait_for(lambda: worker.paused)
            time.sleep(1.0)
            assert "a share was mounted here and is not now" in worker.paused
            assert "reconctl adopt outbox" in worker.paused
            assert store.daemon_state()["worker_warning"].startswith("queue paused: the outbox")
            assert visible(settings.outbox) == []  # the old marker's folder took nothing
            assert set(states(store).values()) <= {DONE, QUEUED}
            subprocess.run(["mount", "--bind", str(share), str(settings.outbox)], check=True)
            wait_for(lambda: set(states(store).values()) == {DONE}, timeout=30)
            assert worker.paused is None
            places = assert_each_in_one_place(list(pictures.values()), settings.inbox, settings.outbox)
            assert all(place.startswith("result") for place in places)
    assert visible(settings.outbox) == []  # the bare mount point, once more: still empty
    assert len([name for name in visible(share) if name != "index.html"]) == 5


def test_restart_with_the_share_away_and_an_old_marker_under_it_waits(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    settings = settings_for(tmp_path)
    old_marker_in(settings.outbox)
    store = Store(settings.db_path)
    with mounted("--bind", str(share), target=settings.outbox):
        Worker(settings, store).recover()  # a start with the share mounted: its marker is known
        subprocess.run(["umount", "-l", str(settings.outbox)], check=True)
        replaced = FolderIdentity("outbox", settings.outbox.resolve(), settings.state_dir).check()
        assert replaced and "a share was mounted here and is not now" in replaced
        with running(settings, store=store) as (_, _, worker):  # the restart, share still away
            (settings.inbox / "a.png").write_bytes(b"a picture")
            wait_for(lambda: worker.paused and states(store) == {"a.png": QUEUED})
            time.sleep(1.0)
            assert visible(settings.outbox) == [] and states(store) == {"a.png": QUEUED}
            subprocess.run(["mount", "--bind", str(share), str(settings.outbox)], check=True)
            wait_for(lambda: states(store) == {"a.png": DONE}, timeout=30)
        place = assert_each_in_one_place([b"a picture"], settings.inbox, settings.outbox)[0]
        assert place.startswith("result")


def test_another_daemons_marker_in_the_outbox_pauses_until_adopted(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = Store(settings.db_path)
    store.daemon_started(os.getpid())  # status reads a running daemon's row
    with running(settings, StandInPipeline(stage_seconds=0.02), store) as (_, _, worker):
        (settings.inbox / "a.png").write_bytes(b"before the swap")
        wait_for(lambda: states(store) == {"a.png": DONE})
        # Another daemon's outbox put in this one's place (a share remapped, a folder renamed).
        settings.outbox.rename(tmp_path / "outbox-before")
        theirs = settings_for(tmp_path / "theirs")
        FolderIdentity("outbox", theirs.outbox, theirs.state_dir).check()  # writes their marker
        theirs.outbox.rename(settings.outbox)
        (settings.inbox / "b.png").write_bytes(b"after the swap")
        wait_for(lambda: worker.paused and "holds another folder's marker" in worker.paused)
        time.sleep(1.0)
        assert states(store)["b.png"] == QUEUED and visible(settings.outbox) == []
        code, output = reconctl(settings, "status")
        assert "warning: queue paused: the outbox" in output and "reconctl adopt outbox" in output
        code, output = reconctl(settings, "adopt", "outbox")
        assert code == 0 and "is the outbox from now on" in output
        wait_for(lambda: states(store)["b.png"] == DONE, timeout=20)
        assert worker.paused is None and store.daemon_state()["worker_warning"] is None
    assert assert_each_in_one_place([b"after the swap"], settings.inbox, settings.outbox)[0].startswith("result")
    assert visible(tmp_path / "outbox-before")[0].endswith("_a")


def test_the_setting_takes_a_changed_outbox_with_a_warning(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, adopt_changed_folders=True)
    identity = FolderIdentity("outbox", settings.outbox, settings.state_dir, adopt_any=True)
    assert identity.check() is None
    (settings.outbox / MARKER_NAME).write_text("f" * 32 + "\n")
    assert identity.check() is None and identity.expected == "f" * 32
    strict = FolderIdentity("outbox", settings.outbox, settings.state_dir)
    assert strict.check() is None  # the state dir remembers the folder it took
    (settings.outbox / MARKER_NAME).write_text("e" * 32 + "\n")
    assert "holds another folder's marker" in strict.check()
    # A restart finds the marker changed since the last run: still not taken silently.
    assert "holds another folder's marker" in FolderIdentity("outbox", settings.outbox, settings.state_dir).check()


def test_a_folder_made_again_without_a_marker_is_taken(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    identity = FolderIdentity("outbox", settings.outbox, settings.state_dir)
    assert identity.check() is None
    first = identity.expected
    os.rename(settings.outbox, tmp_path / "gone")
    settings.outbox.mkdir()
    assert identity.check() is None and identity.expected != first
    assert (settings.outbox / MARKER_NAME).read_text().strip() == identity.expected
