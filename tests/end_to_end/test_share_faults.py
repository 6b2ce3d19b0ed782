"""Issue 18, case by case: the share itself misbehaves, links race the checks, a file is huge.

Real bind mounts unmounted mid-queue and mounted again, real symlink swaps (one of them from a
thread racing the reads), a real 1 TB sparse file, a real kill -9 of a child process, real
umasks. The worker runs ``StandInPipeline`` (helpers/stand_in.py). Every test ends by checking that
each picture's bytes lie in exactly one place: a result's source.*, inbox/failed/, or the inbox.
"""

from __future__ import annotations

import ctypes
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from recond.config import Settings
from recond.errors import InputError
from recond.inbox import dropped
from recond.inbox.failed import move_to_failed
from recond.outbox import leftovers, publish
from recond.pipeline.image import decode_image, is_picture_name
from recond.shares import beneath
from recond.store import DONE, DUPLICATE, FAILED, QUEUED, Store
from recond.worker import Worker

from helpers.paths import REPO
from helpers.places import assert_in_one_place, places_holding
from helpers.privileged import mounted
from helpers.running import PickyPipeline, reconctl, running, states, watching
from helpers.settings import TEST_TIMINGS, settings_for
from helpers.stand_in import StandInPipeline, sha256
from helpers.waiting import wait_for

SETTLE = TEST_TIMINGS["settle_seconds"]
RENAME_EXCHANGE = 2  # linux/fs.h: renameat2 swaps the two names atomically


def visible(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))


# --- The folders are the ones recond started with ------------------------------------------

def test_outbox_share_unmounted_mid_queue_pauses_and_nothing_lands_in_the_bare_mount_point(
        tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    settings = settings_for(tmp_path)
    pictures = {name: f"picture {name}".encode() for name in ("a.png", "b.png", "c.png")}
    pipeline = StandInPipeline(stage_seconds=0.05)
    with mounted("--bind", str(share), target=settings.outbox):
        with running(settings, pipeline) as (store, _, worker):
            (settings.inbox / "a.png").write_bytes(pictures["a.png"])
            wait_for(lambda: states(store) == {"a.png": DONE})
            for name in ("b.png", "c.png"):
                (settings.inbox / name).write_bytes(pictures[name])
            pipeline.started.clear()
            pipeline.started.wait(10)  # b.png is being built in the share
            subprocess.run(["umount", str(settings.outbox)], check=True)  # the share drops away
            wait_for(lambda: worker.paused)
            time.sleep(1.0)
            assert "not the folder recond started with" in worker.paused
            assert states(store) == {"a.png": DONE, "b.png": QUEUED, "c.png": QUEUED}
            assert store.daemon_state()["worker_warning"].startswith("queue paused: the outbox")
            assert os.listdir(settings.outbox) == []  # nothing built or published in the bare folder
            assert visible(settings.inbox) == ["b.png", "c.png"]  # originals kept
            subprocess.run(["mount", "--bind", str(share), str(settings.outbox)], check=True)
            wait_for(lambda: set(states(store).values()) == {DONE}, timeout=30)
            assert worker.paused is None and store.daemon_state()["worker_warning"] is None
            for data in pictures.values():
                assert assert_in_one_place(data, settings.inbox, settings.outbox).startswith("result")
    assert os.listdir(settings.outbox) == []  # the bare mount point, once more: still empty
    results = sorted(Path(job.output).name for job in store.jobs(DONE))
    assert visible(share) == [*results, "index.html"]  # the results and their gallery


def test_restart_while_the_outbox_share_is_away_takes_nothing_for_the_share(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    settings = settings_for(tmp_path)
    store = Store(settings.db_path)
    with mounted("--bind", str(share), target=settings.outbox):
        Worker(settings, store).recover()  # a start with the share mounted: its marker is known
        subprocess.run(["umount", str(settings.outbox)], check=True)
        with running(settings, store=store) as (_, _, worker):  # the restart, share still away
            (settings.inbox / "a.png").write_bytes(b"a picture")
            wait_for(lambda: worker.paused and states(store) == {"a.png": QUEUED})
            time.sleep(1.0)
            assert os.listdir(settings.outbox) == [] and states(store) == {"a.png": QUEUED}
            subprocess.run(["mount", "--bind", str(share), str(settings.outbox)], check=True)
            wait_for(lambda: states(store) == {"a.png": DONE}, timeout=30)
        assert assert_in_one_place(b"a picture", settings.inbox, settings.outbox).startswith("result")


def test_inbox_share_unmounted_pauses_intake_with_a_status_line_and_resumes(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    settings = settings_for(tmp_path)
    with mounted("--bind", str(share), target=settings.inbox):
        with running(settings) as (store, intake, _):
            (settings.inbox / "a.png").write_bytes(b"before the drop")
            wait_for(lambda: states(store) == {"a.png": DONE})
            subprocess.run(["umount", str(settings.inbox)], check=True)
            wait_for(lambda: intake.paused, tick=intake.supervise)
            assert "inbox" in intake.paused and "not the folder recond started with" in intake.paused
            (settings.inbox / "local.png").write_bytes(b"written into the bare mount point")
            time.sleep(SETTLE * 3)
            intake.supervise()
            assert "local.png" not in states(store)  # a bare mount point is not the inbox
            subprocess.run(["mount", "--bind", str(share), str(settings.inbox)], check=True)
            wait_for(lambda: intake.paused is None, tick=intake.supervise)
            (settings.inbox / "b.png").write_bytes(b"after the share came back")
            wait_for(lambda: states(store).get("b.png") == DONE, tick=intake.supervise)
        for data in (b"before the drop", b"after the share came back"):
            assert assert_in_one_place(data, settings.inbox, settings.outbox).startswith("result")
    assert assert_in_one_place(b"written into the bare mount point", settings.inbox,
                               settings.outbox) == "inbox local.png"


def test_inbox_replaced_by_a_symlink_is_not_taken_and_says_so(settings: Settings, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "private.png").write_bytes(b"a picture from elsewhere")
    with running(settings) as (store, intake, _):
        (settings.inbox / "a.png").write_bytes(b"a picture in the inbox")
        wait_for(lambda: states(store) == {"a.png": DONE})
        settings.inbox.rename(tmp_path / "inbox-real")
        settings.inbox.symlink_to(elsewhere)
        wait_for(lambda: intake.paused, tick=intake.supervise)
        assert "has become a symlink" in intake.paused
        time.sleep(SETTLE * 3)
        intake.supervise()
        assert "private.png" not in states(store)
        settings.inbox.unlink()
        (tmp_path / "inbox-real").rename(settings.inbox)
        wait_for(lambda: intake.paused is None, tick=intake.supervise)
    assert (elsewhere / "private.png").read_bytes() == b"a picture from elsewhere"
    assert places_holding(b"a picture from elsewhere", settings.inbox, settings.outbox) == []
    assert assert_in_one_place(b"a picture in the inbox", settings.inbox, settings.outbox).startswith("result")


# --- No path leaves the inbox ----------------------------------------------------------------

def private_folder(tmp_path: Path, name: str = "pic.png") -> Path:
    private = tmp_path / "private"
    private.mkdir()
    (private / name).write_bytes(b"a private picture")
    (private / name).chmod(0o600)
    return private


def test_subfolder_swapped_for_a_link_moves_and_reads_nothing_from_outside(settings: Settings,
                                                                            tmp_path: Path) -> None:
    private = private_folder(tmp_path)
    store = Store(settings.db_path)
    (settings.inbox / "sub").mkdir()
    (settings.inbox / "sub" / "pic.png").write_bytes(b"the queued picture")
    job, _ = store.enqueue("sub/pic.png", sha256(b"the queued picture"), 18, "t_pic")
    (settings.inbox / "sub").rename(settings.inbox / "sub-before")  # the swap
    (settings.inbox / "sub").symlink_to(private)
    pipeline = StandInPipeline()
    worker = Worker(settings, store, pipeline_factory=lambda s: pipeline)
    worker.process(store.claim_next())
    ended = store.get(job.id)
    assert ended.state == FAILED and "regular file" in ended.error
    assert pipeline.runs == []
    assert (private / "pic.png").read_bytes() == b"a private picture"  # neither moved nor read
    assert places_holding(b"a private picture", settings.inbox, settings.outbox) == []
    assert assert_in_one_place(b"the queued picture", settings.inbox,
                               settings.outbox) == "inbox sub-before/pic.png"


def test_retry_through_a_swapped_subfolder_writes_nothing_outside(settings: Settings,
                                                                  tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    store = Store(settings.db_path)
    (settings.inbox / "sub").mkdir()
    (settings.inbox / "sub" / "pic.png").write_bytes(b"corrupt picture")
    job, _ = store.enqueue("sub/pic.png", sha256(b"corrupt picture"), 15, "t_pic")
    worker = Worker(settings, store, pipeline_factory=lambda s: PickyPipeline())
    worker.process(store.claim_next())
    assert store.get(job.id).state == FAILED and not (settings.inbox / "sub").exists()
    (settings.inbox / "sub").symlink_to(private)  # the subfolder comes back as a link
    code, output = reconctl(settings, "retry", str(job.id))
    assert code == 1 and "symlink" in output
    assert os.listdir(private) == []
    assert assert_in_one_place(b"corrupt picture", settings.inbox, settings.outbox) == "failed failed/pic.png"
    (settings.inbox / "sub").unlink()
    code, output = reconctl(settings, "retry", str(job.id))
    assert code == 0 and "moved back" in output
    assert assert_in_one_place(b"corrupt picture", settings.inbox, settings.outbox) == "inbox sub/pic.png"


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways recond.shares.beneath resolves a path: the kernel's openat2, and the descriptor walk
    it falls back to on kernels without it."""
    monkeypatch.setattr(beneath, "_openat2_works", request.param == "openat2")
    return request.param


def test_reads_racing_a_subfolder_swap_never_return_the_private_bytes(settings: Settings, tmp_path: Path,
                                                                      resolver: str) -> None:
    private = private_folder(tmp_path)
    inbox = settings.inbox
    (inbox / "sub").mkdir()
    (inbox / "sub" / "pic.png").write_bytes(b"the queued picture")
    (inbox / "sub-link").symlink_to(private)
    libc = ctypes.CDLL(None, use_errno=True)
    names = [os.fsencode(inbox / "sub"), os.fsencode(inbox / "sub-link")]
    stop = threading.Event()

    def swap() -> None:  # "sub" is always there: a folder, then a link, then a folder ...
        while not stop.is_set():
            assert libc.renameat2(-100, names[0], -100, names[1], RENAME_EXCHANGE) == 0

    racer = threading.Thread(target=swap)
    racer.start()
    seen: dict[str, int] = {}
    try:
        for _ in range(20000):
            try:
                read = dropped.read(inbox, "sub/pic.png", 1 << 20, keep=True)
                outcome = read.data.decode()
            except OSError as error:
                outcome = type(error).__name__
            seen[outcome] = seen.get(outcome, 0) + 1
            if min(seen.get("the queued picture", 0), seen.get("NotARegularFile", 0)) >= 50:
                break
    finally:
        stop.set()
        racer.join()
    assert "a private picture" not in seen, seen  # a link met on the way is refused, never followed
    assert min(seen.get("the queued picture", 0), seen.get("NotARegularFile", 0)) >= 50, seen  # it raced
    if (inbox / "sub").is_symlink():
        libc.renameat2(-100, names[0], -100, names[1], RENAME_EXCHANGE)
    for failed in ("failed", "failed-recond"):
        assert not (inbox / failed).exists()
    assert (private / "pic.png").read_bytes() == b"a private picture"
    assert assert_in_one_place(b"the queued picture", inbox, settings.outbox) == "inbox sub/pic.png"


def test_swap_right_after_the_check_publishes_only_the_checked_bytes(settings: Settings, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    private = private_folder(tmp_path)
    inbox = settings.inbox
    real_read = dropped.read

    def read_then_swap(*arguments, **options):
        read = real_read(*arguments, **options)
        if options.get("keep") and (inbox / "sub").is_dir() and not (inbox / "sub").is_symlink():
            (inbox / "sub").rename(inbox / "sub-aside")  # the moment the worker's check is done
            (inbox / "sub").symlink_to(private)
        return read

    monkeypatch.setattr(dropped, "read", read_then_swap)
    with running(settings) as (store, _, _):
        (inbox / "sub").mkdir()
        (inbox / "sub" / "pic.png").write_bytes(b"the queued picture")
        job = wait_for(lambda: store.jobs(DONE))[0]
        assert (inbox / "sub").is_symlink()
        result = Path(job.output)
        assert (result / "source.png").read_bytes() == b"the queued picture"
        assert any("changed while it was processed" in warning for warning in job.warnings)
        (inbox / "sub").unlink()
        (inbox / "sub-aside").rename(inbox / "sub")  # the copy left behind is tidied by intake
        wait_for(lambda: not (inbox / "sub").exists())
    assert (private / "pic.png").read_bytes() == b"a private picture"
    assert places_holding(b"a private picture", inbox, settings.outbox) == []
    assert assert_in_one_place(b"the queued picture", inbox, settings.outbox) == f"result {result.name}"


# --- No single file costs others more than its share ------------------------------------------

def test_huge_file_in_a_read_only_inbox_is_one_failed_row_over_rescans(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    os.truncate(os.open(share / "huge.png", os.O_CREAT | os.O_WRONLY, 0o644), 1 << 40)
    settings = settings_for(tmp_path)
    with mounted("--bind", str(share), target=settings.inbox), \
            mounted("-o", "remount,ro,bind", target=settings.inbox):
        with running(settings) as (store, intake, _):
            wait_for(lambda: states(store) == {"huge.png": FAILED})
            for _ in range(3):
                intake.scan()
                time.sleep(SETTLE * 2)
            assert len(store.jobs()) == 1 and "stays in the inbox" in store.jobs()[0].error
        assert (settings.inbox / "huge.png").stat().st_size == 1 << 40


def test_copy_waiting_on_a_queued_original_stays_one_row_over_rescans(settings: Settings) -> None:
    store = Store(settings.db_path)
    with watching(settings, store) as intake:
        (settings.inbox / "a.png").write_bytes(b"the only picture")
        wait_for(lambda: store.jobs())
        (settings.inbox / "copy.png").write_bytes(b"the only picture")
        wait_for(lambda: states(store).get("copy.png") == DUPLICATE)
        for _ in range(5):
            intake.scan()
            time.sleep(SETTLE * 1.5)
        assert len(store.jobs(limit=100)) == 2
        (settings.inbox / "a.png").unlink()
    with running(settings, store=store):
        wait_for(lambda: states(store) == {"a.png": FAILED, "copy.png": DONE})
    assert len(store.jobs(limit=100)) == 2
    assert assert_in_one_place(b"the only picture", settings.inbox, settings.outbox).startswith("result")


# --- Permissions and formats -----------------------------------------------------------------

@pytest.mark.parametrize(("source_mode", "file_mode", "folder_mode"),
                         [(0o600, 0o600, 0o700), (0o644, 0o644, 0o755), (0o664, 0o664, 0o775)])
def test_a_result_grants_no_more_than_its_picture(settings: Settings, source_mode: int,
                                                  file_mode: int, folder_mode: int) -> None:
    previous = os.umask(0o002)  # the unit's old UMask: results were 0664 whatever the picture
    try:
        with running(settings) as (store, _, _):
            path = settings.inbox / "a.png"
            path.write_bytes(b"a picture")
            path.chmod(source_mode)
            job = wait_for(lambda: store.jobs(DONE))[0]
    finally:
        os.umask(previous)
    result = Path(job.output)
    assert stat.S_IMODE(result.stat().st_mode) == folder_mode
    assert {stat.S_IMODE(p.stat().st_mode) for p in result.iterdir()} == {file_mode}
    assert assert_in_one_place(b"a picture", settings.inbox, settings.outbox) == f"result {result.name}"


def test_service_umask_grants_nothing_to_others_as_its_comment_says() -> None:
    unit = (REPO / "systemd" / "recond.service").read_text()
    umask = int(next(line for line in unit.splitlines() if line.startswith("UMask=")).split("=")[1], 8)
    assert umask & 0o007 == 0o007  # others: no read, write or search
    assert "nobody else" in unit and "0600 picture" in unit


def test_postscript_is_never_a_picture_nor_decoded(settings: Settings, tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), (200, 40, 40)).save(tmp_path / "x.eps")  # a real EPS file
    data = (tmp_path / "x.eps").read_bytes()
    assert data.startswith(b"%!PS") or data[:4] == b"\xc5\xd0\xd3\xc6"
    assert not is_picture_name("x.eps") and not is_picture_name("x.ps") and is_picture_name("x.jpg")
    with pytest.raises(InputError, match="not an image format"):
        decode_image(data, "disguised.png", 10_000_000)  # a .png name does not make it decoded
    with running(settings) as (store, intake, _):
        (settings.inbox / "x.eps").write_bytes(data)
        wait_for(lambda: intake.not_pictures)
        time.sleep(SETTLE * 2)
        assert states(store) == {}
    assert assert_in_one_place(data, settings.inbox, settings.outbox) == "inbox x.eps"


# --- The CLI ---------------------------------------------------------------------------------

def test_control_characters_in_names_are_printed_escaped(settings: Settings) -> None:
    store = Store(settings.db_path)
    name = "clear\x1b[2J\x07bell.png"
    (settings.inbox / name).write_bytes(b"x")
    store.enqueue(name, sha256(b"x"), 1, "t_clear")
    job = store.claim_next()
    store.fail(job.id, f"{name} is not a picture",
               kept_at=move_to_failed(settings.inbox, name, job.id, "not a picture"))
    for command in (["jobs"], ["show", str(job.id)], ["status"], ["retry", str(job.id)]):
        code, output = reconctl(settings, *command)
        assert "\x1b" not in output and "\x07" not in output, command
        assert "clear\\x1b[2J\\x07bell.png" in output, (command, output)
    code, output = reconctl(settings, "jobs", "--json")
    assert "\\u001b[2J" in output and "\x1b" not in output
    assert assert_in_one_place(b"x", settings.inbox, settings.outbox) == f"inbox {name}"


# --- Kills ------------------------------------------------------------------------------------

KILLED_PROCESS_RUN = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from recond.outbox import publish
    from recond.outbox import leftovers
    with publish.staging(Path(sys.argv[1]), "20260101-000000_photo", leftovers.process_owner(os.getpid()) + "-0"):
        os.kill(os.getpid(), signal.SIGKILL)  # `reconctl process` killed mid-build
""")


def test_killed_process_run_leaves_no_partial_after_the_next_start(settings: Settings) -> None:
    child = subprocess.run([sys.executable, "-c", KILLED_PROCESS_RUN, str(settings.outbox)], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    left = [name for name in os.listdir(settings.outbox) if name.endswith(publish.STAGING_SUFFIX)]
    assert len(left) == 1
    alive = publish.staging_dir(settings.outbox, "running", f"{leftovers.process_owner(os.getpid())}-0")
    alive.mkdir()  # a run still going (this process): kept
    Worker(settings, Store(settings.db_path)).recover()  # the daemon's next start
    assert [name for name in os.listdir(settings.outbox) if name.endswith(publish.STAGING_SUFFIX)] == [alive.name]
