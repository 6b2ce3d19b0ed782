"""Issue 11, case by case: nothing dropped is ever lost, and no single file stops the daemon.

Real files, FIFOs, sockets, device nodes, symlinks, real mounts (tmpfs, read-only bind mounts),
a second process holding the SQLite file, kill -9, an unprivileged user (uid 65534 in a private
mount namespace, because the interpreter lives under root's 0700 home), and a memory limit
(RLIMIT_AS) for the oversized-picture case. Every test ends by checking that each picture's
bytes lie in exactly one place: a result's source.*, inbox/failed/, or still in the inbox.

The worker runs ``StandInPipeline`` (helpers/stand_in.py; the real pipeline would cost seconds per
job); the memory case runs the real Pipeline on the tiny checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from recond.cli import cli
from recond.config import Settings
from recond.inbox.failed import error_note
from recond.outbox import publish
from recond.status import status_report
from recond.store import DONE, DUPLICATE, FAILED, QUEUED, RUNNING, Store
from recond.triposr.tiny import reference_picture
from recond.worker import Worker

from helpers.paths import REPO
from helpers.places import assert_in_one_place, places_holding
from helpers.privileged import as_nobody, mounted
from helpers.running import PickyPipeline, running, states, watching
from helpers.settings import TEST_TIMINGS, settings_for
from helpers.stand_in import StandInPipeline, sha256
from helpers.waiting import wait_for

SETTLE = TEST_TIMINGS["settle_seconds"]
def png_bytes() -> bytes:
    """A small real picture the tiny model makes a result of: a disc on a transparent ground."""
    import io

    buffer = io.BytesIO()
    reference_picture(64).save(buffer, format="PNG")
    return buffer.getvalue()


# --- Pictures lost for good -------------------------------------------------------------

def test_empty_uploads_are_never_settled_nor_anyones_duplicate(settings: Settings) -> None:
    with running(settings) as (store, intake, _):
        for name in ("first.png", "second.png"):
            (settings.inbox / name).touch()  # share clients create the name, then stall
        time.sleep(SETTLE * 4)
        assert store.jobs() == [] and intake.idle()
        assert {p.name for p in settings.inbox.glob("[!.]*")} == {"first.png", "second.png"}
        (settings.inbox / "second.png").write_bytes(b"second picture")
        (settings.inbox / "first.png").write_bytes(b"first picture")
        wait_for(lambda: states(store) == {"first.png": DONE, "second.png": DONE})
    for data in (b"first picture", b"second picture"):
        assert assert_in_one_place(data, settings.inbox, settings.outbox).startswith("result")


def test_file_replaced_after_it_was_queued_is_processed_with_its_new_bytes(settings: Settings) -> None:
    store = Store(settings.db_path)
    with watching(settings, store):
        (settings.inbox / "a.png").write_bytes(b"old bytes")
        job = wait_for(lambda: store.jobs())[0]
        (settings.inbox / "a.png").write_bytes(b"new bytes, longer")
        wait_for(lambda: store.get(job.id).sha256 == sha256(b"new bytes, longer"))
        assert len(store.jobs()) == 1
    with running(settings, store=store):
        wait_for(lambda: store.get(job.id).state == DONE)
        (settings.inbox / "backup of a.png").write_bytes(b"old bytes")  # not anyone's duplicate
        wait_for(lambda: states(store).get("backup of a.png") == DONE)
    assert assert_in_one_place(b"new bytes, longer", settings.inbox, settings.outbox).startswith("result")
    assert assert_in_one_place(b"old bytes", settings.inbox, settings.outbox).startswith("result")


def test_worker_never_runs_bytes_other_than_those_queued(settings: Settings) -> None:
    store = Store(settings.db_path)
    (settings.inbox / "a.png").write_bytes(b"new bytes")
    job, _ = store.enqueue("a.png", sha256(b"old bytes"), 9, "t_a")
    told = []
    pipeline = StandInPipeline()
    worker = Worker(settings, store, pipeline_factory=lambda s: pipeline, on_file_changed=told.append)
    worker.process(store.claim_next())
    ended = store.get(job.id)
    assert ended.state == FAILED and "changed after it was queued" in ended.error
    assert pipeline.runs == [] and told == [settings.inbox.resolve() / "a.png"]
    assert assert_in_one_place(b"new bytes", settings.inbox, settings.outbox) == "inbox a.png"


def test_file_overwritten_while_its_job_runs_stays_in_the_inbox(settings: Settings) -> None:
    pipeline = StandInPipeline(stage_seconds=0.1)
    with running(settings, pipeline) as (store, _, _):
        (settings.inbox / "a.png").write_bytes(b"first version")
        pipeline.started.wait(10)
        (settings.inbox / "a.png").write_bytes(b"second version")
        first = wait_for(lambda: (job := store.jobs(DONE)) and job[-1])
        assert any("changed while it was processed" in warning for warning in first.warnings)
        wait_for(lambda: len(store.jobs(DONE)) == 2)  # the new version becomes a job of its own
    assert assert_in_one_place(b"first version", settings.inbox, settings.outbox).startswith("result")
    assert assert_in_one_place(b"second version", settings.inbox, settings.outbox).startswith("result")


def test_backup_copy_survives_when_the_original_of_its_queued_job_is_deleted(settings: Settings) -> None:
    store = Store(settings.db_path)
    with watching(settings, store):
        (settings.inbox / "a.png").write_bytes(b"the only picture")
        wait_for(lambda: store.jobs())
        (settings.inbox / "backup.png").write_bytes(b"the only picture")
        wait_for(lambda: states(store).get("backup.png") == DUPLICATE)
        assert (settings.inbox / "backup.png").exists()  # kept: no result holds its bytes yet
    (settings.inbox / "a.png").unlink()
    with running(settings, store=store):
        wait_for(lambda: states(store) == {"a.png": FAILED, "backup.png": DONE})
    assert assert_in_one_place(b"the only picture", settings.inbox, settings.outbox).startswith("result")


def test_two_daemons_sharing_an_outbox_never_mix_results(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    pictures = {"one": b"picture of daemon one", "two": b"picture of daemon two"}
    workers, stores = [], {}
    for name, data in pictures.items():
        settings = settings_for(tmp_path / name, outbox=outbox)
        (settings.inbox / "mug.png").write_bytes(data)
        stores[name] = Store(settings.db_path)
        stores[name].enqueue("mug.png", sha256(data), len(data), "20260101-000000_mug")  # same second
        workers.append(Worker(settings, stores[name], pipeline_factory=lambda s: StandInPipeline(stage_seconds=0.05)))
    assert workers[0].owner != workers[1].owner
    for worker in workers:
        worker.start()
    try:
        for store in stores.values():
            wait_for(lambda: store.jobs(DONE))
    finally:
        for worker in workers:
            worker.stop()
    outputs = {name: Path(store.jobs(DONE)[0].output) for name, store in stores.items()}
    assert outputs["one"] != outputs["two"]
    assert sorted(p.name for p in outbox.iterdir() if p.is_dir()) == ["20260101-000000_mug",
                                                                     "20260101-000000_mug-2"]
    for name, data in pictures.items():
        assert (outputs[name] / "source.png").read_bytes() == data
        assert assert_in_one_place(data, tmp_path / name / "inbox", outbox) == f"result {outputs[name].name}"


KILL_AFTER_PUBLISH = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from recond.outbox import publish
    from recond.config import load_settings
    from recond.store import Store
    from recond.worker import Worker
    from helpers.stand_in import StandInPipeline

    real_publish = publish.publish

    def publish_then_die(*arguments):
        real_publish(*arguments)
        os.kill(os.getpid(), signal.SIGKILL)  # right after the rename, before it is recorded

    publish.publish = publish_then_die
    root = sys.argv[1]
    settings = load_settings(inbox=root + "/inbox", outbox=root + "/outbox",
                             state_dir=root + "/state", max_attempts=1, host_workers=0,
                             isolate_host_part=False)
    store = Store(settings.db_path)
    worker = Worker(settings, store, pipeline_factory=lambda s: StandInPipeline())
    worker.process(store.claim_next())
""")


def test_kill_9_right_after_publishing_on_the_last_attempt_keeps_the_result(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_attempts=1)
    store = Store(settings.db_path)
    (settings.inbox / "a.png").write_bytes(b"picture")
    job, _ = store.enqueue("a.png", sha256(b"picture"), 7, "t_a")
    child = subprocess.run([sys.executable, "-c", KILL_AFTER_PUBLISH, str(tmp_path), str(REPO / "tests")],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert store.get(job.id).state == RUNNING and store.get(job.id).attempts == 1
    pipeline = StandInPipeline()
    worker = Worker(settings, store, pipeline_factory=lambda s: pipeline)
    worker.recover()  # a restart
    assert store.get(job.id).state == QUEUED
    worker.process(store.claim_next())
    done = store.get(job.id)
    assert done.state == DONE and pipeline.runs == [] and done.output == str(settings.outbox.resolve() / "t_a")
    result = CliRunner().invoke(cli, ["retry", str(job.id)], env={"RECOND_INBOX": str(settings.inbox),
                                "RECOND_STATE_DIR": str(settings.state_dir)})
    assert result.exit_code == 1 and "only failed jobs" in result.output
    assert assert_in_one_place(b"picture", settings.inbox, settings.outbox) == "result t_a"


# --- One file stops intake or the worker ---------------------------------------------------

@pytest.mark.parametrize("name", [
    "x" * 251 + ".png",  # 255 bytes
    "é" * 118 + ".png",  # 240 bytes of UTF-8
    "/".join(f"level{n}" for n in range(30)) + "/deep.png",
    os.fsdecode(b"caf\xe9 \xff.png"),  # not UTF-8
])
@pytest.mark.parametrize("outcome", ["done", "failed"])
def test_any_name_ends_in_a_result_or_failed_and_the_worker_lives(settings: Settings, name: str,
                                                                  outcome: str) -> None:
    data = (b"corrupt " if outcome == "failed" else b"picture ") + os.fsencode(name)[:20]
    path = settings.inbox / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    with running(settings, PickyPipeline()) as (store, _, worker):
        job = wait_for(lambda: [job for job in store.jobs() if job.state in (DONE, FAILED)])[0]
        assert worker.is_alive() and job.state == outcome and job.source_name == name
    place = assert_in_one_place(data, settings.inbox, settings.outbox)
    if outcome == "done":
        record = json.loads((Path(job.output) / "job.json").read_text())
        assert record["source"] == Path(name).name  # the original name is kept
    else:
        kept = Path(job.output)
        assert place.startswith("failed") and error_note(kept).is_file()
    assert [p.name for p in settings.inbox.iterdir() if p.is_dir()] in ([], ["failed"])  # tidied


def test_real_pipeline_publishes_names_of_any_bytes_and_length(tmp_path: Path, tiny_model_dir: Path) -> None:
    from recond.pipeline.warm import build_pipeline

    settings = settings_for(tmp_path, model=str(tiny_model_dir), device="cpu", mc_resolution=32,
                            texture_resolution=64, render_views=2, render_size=32, video_fps=2,
                            background="alpha")
    names = [os.fsdecode(b"caf\xe9 \xff.png"), "x" * 251 + ".png"]
    for size, name in zip((64, 72), names):
        reference_picture(size).save(settings.inbox / name)
    pictures = [(settings.inbox / name).read_bytes() for name in names]
    with running(settings, build_pipeline(settings)) as (store, _, worker):
        wait_for(lambda: len(store.jobs(DONE)) == 2, timeout=120)
        assert worker.is_alive()
    for job in store.jobs(DONE):
        record = json.loads((Path(job.output) / "job.json").read_text())
        assert record["source"] in {Path(name).name for name in names}
        assert "index.html" in record["files"]
    for data in pictures:
        assert assert_in_one_place(data, settings.inbox, settings.outbox).startswith("result")


def test_plain_file_named_failed_at_the_inbox_root_does_not_stop_the_worker(settings: Settings) -> None:
    (settings.inbox / "failed").write_bytes(b"corrupt: a user's file called failed")
    (settings.inbox / "bad.png").write_bytes(b"corrupt picture")
    with running(settings, PickyPipeline()) as (store, _, worker):
        wait_for(lambda: states(store) == {"bad.png": FAILED})  # "failed" is no picture: left alone
        (settings.inbox / "good.png").write_bytes(b"good picture")
        wait_for(lambda: states(store).get("good.png") == DONE)
        assert worker.is_alive()
    assert assert_in_one_place(b"corrupt picture", settings.inbox, settings.outbox) == "failed failed-recond/bad.png"
    assert assert_in_one_place(b"corrupt: a user's file called failed", settings.inbox,
                               settings.outbox) == "inbox failed"


def test_read_only_inbox_adds_no_rows_on_rescans_and_a_corrupt_file_does_not_stop_the_worker(
        tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "good.png").write_bytes(b"good picture")
    (share / "bad.png").write_bytes(b"corrupt picture")
    settings = settings_for(tmp_path)
    with mounted("--bind", str(share), target=settings.inbox), \
            mounted("-o", "remount,ro,bind", target=settings.inbox):
        with running(settings, PickyPipeline()) as (store, intake, worker):
            wait_for(lambda: states(store) == {"good.png": DONE, "bad.png": FAILED})
            for _ in range(3):
                intake.scan()  # rescans
                time.sleep(SETTLE * 2)
            assert len(store.jobs()) == 2 and worker.is_alive()
            assert "stays in the inbox" in store.jobs(FAILED)[0].error
            assert any("could not be removed" in w for w in store.jobs(DONE)[0].warnings)
    # Nothing can leave a read-only inbox: the result holds a copy, the original stays.
            assert places_holding(b"good picture", settings.inbox, settings.outbox) == [
                f"result {Path(store.jobs(DONE)[0].output).name}", "inbox good.png"]
            assert sum("good.png could not be removed" in w for w in intake.warnings) == 1
            assert assert_in_one_place(b"corrupt picture", settings.inbox, settings.outbox) == "inbox bad.png"


HOLD_DATABASE = textwrap.dedent("""
    import sqlite3, sys, time
    connection = sqlite3.connect(sys.argv[1], isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(3)
    connection.execute("COMMIT")
""")


def test_database_held_by_another_process_for_3_s_fails_nothing(settings: Settings) -> None:
    pipeline = StandInPipeline(stage_seconds=0.2)
    with running(settings, pipeline) as (store, _, worker):
        (settings.inbox / "a.png").write_bytes(b"picture during a lock")
        pipeline.started.wait(10)
        holder = subprocess.Popen([sys.executable, "-c", HOLD_DATABASE, str(settings.db_path)],
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "locked"
        (settings.inbox / "b.png").write_bytes(b"dropped during the lock")
        assert holder.wait(20) == 0
        wait_for(lambda: states(store) == {"a.png": DONE, "b.png": DONE}, timeout=30)
        assert worker.is_alive()
    for data in (b"picture during a lock", b"dropped during the lock"):
        assert assert_in_one_place(data, settings.inbox, settings.outbox).startswith("result")


MEMORY_CHILD = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    from recond.outbox import publish
    from recond.config import load_settings
    from recond.errors import InputError
    from recond.inbox.dropped import read_source
    from recond.pipeline.runner import Pipeline

    model, folder = sys.argv[1], Path(sys.argv[2])
    small = dict(model=model, device="cpu", mc_resolution=32, texture_resolution=64, render_views=2,
                 render_size=32, video_fps=2, rembg_home=str(folder))
    jobs = {"default": load_settings(**small),
            "no aspect limit": load_settings(**small, max_aspect_ratio=1e9)}
    pipeline = Pipeline(jobs["default"])
    with open("/proc/self/status") as status:
        size_kb = next(int(l.split()[1]) for l in status if l.startswith("VmSize:"))
    limit = (size_kb + 1_500_000) * 1024  # 1.5 GB above what the warm process already maps
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    outcomes = {}
    for picture in sorted(folder.glob("*.png")):
        for label, job in jobs.items():
            try:
                publish.build_result(folder / "outbox", picture.stem, label.replace(" ", "-"),
                                    lambda staging: pipeline.run(read_source(picture, job.max_file_bytes), staging, job))
                outcomes[f"{picture.name} {label}"] = "done"
            except InputError as error:
                outcomes[f"{picture.name} {label}"] = "refused: " + str(error)
    print(json.dumps(outcomes))
""")


def test_long_thin_picture_is_refused_or_handled_in_bounded_memory(tmp_path: Path, tiny_model_dir: Path) -> None:
    strip = Image.new("RGBA", (50000, 1), (200, 80, 40, 255))
    strip.save(tmp_path / "strip.png")  # a few hundred bytes, 1x50000 pixels
    assert (tmp_path / "strip.png").stat().st_size < 1000
    band = Image.new("RGBA", (50000, 3), (0, 0, 0, 0))
    band.paste((200, 80, 40, 255), (10, 0, 49990, 3))  # visible in the middle, transparent ends
    band.save(tmp_path / "band.png")
    child = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(tiny_model_dir), str(tmp_path)],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    outcomes = json.loads(child.stdout.strip().splitlines()[-1])
    assert "max_aspect_ratio" in outcomes["strip.png default"] and "before decoding" in outcomes["strip.png default"]
    assert "\n" not in outcomes["strip.png default"]
    assert outcomes["strip.png no aspect limit"].startswith("refused: ")  # one line of pixels
    assert outcomes["band.png no aspect limit"] == "done"  # padded within the memory limit


# --- Leaks and unclear states ---------------------------------------------------------------

@pytest.mark.parametrize("follow_links", [False, True])
def test_symlinks_never_publish_files_from_outside_the_inbox(tmp_path: Path, follow_links: bool) -> None:
    settings = settings_for(tmp_path, follow_inbox_links=follow_links)
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.png").write_bytes(b"a private picture")
    (private / "secret.png").chmod(0o600)
    (settings.inbox / "secret.png").symlink_to(private / "secret.png")
    (settings.inbox / "shadow.png").symlink_to("/etc/shadow")
    (settings.inbox / "inside.png").write_bytes(b"a picture inside")
    (settings.inbox / "link-to-inside.png").symlink_to(settings.inbox / "inside.png")
    with running(settings) as (store, intake, _):
        wait_for(lambda: states(store).get("inside.png") == DONE)
        time.sleep(SETTLE * 3)
        jobs = states(store)
        assert "secret.png" not in jobs and "shadow.png" not in jobs
        assert ("link-to-inside.png" in jobs) == follow_links
        assert sum("symlink" in w for w in intake.warnings) == (3 if not follow_links else 2)
    assert places_holding(b"a private picture", settings.inbox, settings.outbox) == []
    assert (private / "secret.png").read_bytes() == b"a private picture"
    assert assert_in_one_place(b"a picture inside", settings.inbox, settings.outbox).startswith("result")


def test_unreadable_file_is_reported_once_and_once_mode_still_exits(open_dir: Path, tiny_model_dir: Path) -> None:
    model = shutil.copytree(tiny_model_dir, open_dir / "model")
    model.chmod(0o755)
    for file in model.iterdir():
        file.chmod(0o644)
    settings = settings_for(open_dir, model=str(model), device="cpu")
    (settings.inbox / "private.png").write_bytes(b"root's picture")
    (settings.inbox / "private.png").chmod(0o600)  # root's; the daemon runs as uid 65534
    (settings.inbox / "mine.png").write_bytes(png_bytes())
    for folder in (settings.inbox, settings.outbox, open_dir / "state", open_dir / "numba"):
        folder.mkdir(exist_ok=True)
        os.chown(folder, 65534, 65534)
    os.chown(settings.inbox / "mine.png", 65534, 65534)
    config = open_dir / "recond.toml"
    config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in {
        "inbox": str(settings.inbox), "outbox": str(settings.outbox), "state_dir": str(open_dir / "state"),
        "model": str(model), "device": "cpu", "settle_seconds": SETTLE, "mc_resolution": 32,
        "texture_resolution": 64, "render_views": 2, "render_size": 32, "video_fps": 2,
        "background": "alpha"}.items()))  # rembg's numba compile would cost a minute here
    daemon = as_nobody(sys.executable, "-m", "recond.daemon", "--config", str(config), "--once",
                       env={"NUMBA_CACHE_DIR": str(open_dir / "numba")}, timeout=240)
    assert daemon.returncode == 0, daemon.stderr[-3000:]
    log = (open_dir / "state" / "recond.log").read_text().splitlines()
    reports = [line for line in log if "cannot read private.png" in line]
    assert len(reports) == 1 and "warning" in reports[0]
    shown = Store(open_dir / "state" / "recond.db").daemon_state()["watcher_warnings"]  # status shows these
    assert sum("cannot read private.png" in warning for warning in shown) == 1
    assert assert_in_one_place(b"root's picture", settings.inbox, settings.outbox) == "inbox private.png"
    assert assert_in_one_place(png_bytes(), settings.inbox, settings.outbox).startswith("result")


def test_full_outbox_pauses_the_queue_with_a_warning_and_resumes(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with mounted("-t", "tmpfs", "-o", "size=20m", "tmpfs", target=settings.outbox):
        filler = settings.outbox / "filler"
        filler.write_bytes(b"\0" * (20 * 1024 * 1024 - 512 * 1024))  # leaves less than a picture
        pictures = {name: os.urandom(1024 * 1024) for name in ("a.png", "b.png")}
        with running(settings) as (store, _, worker):
            store.daemon_started(os.getpid())
            for name, data in pictures.items():
                (settings.inbox / name).write_bytes(data)
            wait_for(lambda: worker.paused)
            time.sleep(1.0)
            assert set(states(store).values()) == {QUEUED}  # nothing failed, nothing lost
            warning = status_report(settings)["daemon"]["worker_warning"]
            assert warning.startswith("queue paused") and "full" in warning
            shown = CliRunner().invoke(cli, ["status"], env={"RECOND_STATE_DIR": str(settings.state_dir)})
            assert "warning: queue paused" in shown.output
            filler.unlink()  # space comes back
            wait_for(lambda: set(states(store).values()) == {DONE}, timeout=30)
            assert status_report(settings)["daemon"]["worker_warning"] is None
            assert all(job.attempts == 1 for job in store.jobs())  # pauses are not crashes
        for data in pictures.values():
            assert assert_in_one_place(data, settings.inbox, settings.outbox).startswith("result")


def test_read_only_outbox_pauses_the_queue_and_resumes_when_writable(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with mounted("--bind", str(settings.outbox), target=settings.outbox):
        subprocess.run(["mount", "-o", "remount,ro,bind", str(settings.outbox)], check=True)
        with running(settings) as (store, _, worker):
            (settings.inbox / "a.png").write_bytes(b"picture")
            wait_for(lambda: worker.paused)
            assert "read-only" in worker.paused and states(store) == {"a.png": QUEUED}
            subprocess.run(["mount", "-o", "remount,rw,bind", str(settings.outbox)], check=True)
            wait_for(lambda: states(store) == {"a.png": DONE}, timeout=30)
        assert assert_in_one_place(b"picture", settings.inbox, settings.outbox).startswith("result")


def test_unmounted_inbox_share_in_polling_mode_makes_jobs_wait(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    settings = settings_for(tmp_path, polling=True)
    pictures = (b"first picture", b"second picture")
    with mounted("-t", "tmpfs", "-o", "size=8m", "tmpfs", target=share):
        with mounted("--bind", str(share), target=settings.inbox):
            store = Store(settings.db_path)
            pipeline = StandInPipeline()
            worker = Worker(settings, store, pipeline_factory=lambda s: pipeline)
            worker.recover()  # start-up, with the share mounted
            with watching(settings, store):
                for number, data in enumerate(pictures):
                    (settings.inbox / f"{number}.png").write_bytes(data)
                wait_for(lambda: len(store.jobs(QUEUED)) == 2)
            subprocess.run(["umount", str(settings.inbox)], check=True)  # the share drops away
            worker.start()
            try:
                time.sleep(2.0)
                assert len(store.jobs(QUEUED)) == 2 and pipeline.runs == []  # waiting, not "removed"
                subprocess.run(["mount", "--bind", str(share), str(settings.inbox)], check=True)
                wait_for(lambda: len(store.jobs(DONE)) == 2, timeout=30)
            finally:
                worker.stop()
            assert all(job.attempts == 1 for job in store.jobs())
        for data in pictures:
            assert assert_in_one_place(data, share, settings.outbox).startswith("result")


def test_leftover_staging_folders_are_cleaned_at_start_up_after_attempts_run_out(settings: Settings) -> None:
    store = Store(settings.db_path)
    (settings.inbox / "poison.png").write_bytes(b"crashes recond")
    job, _ = store.enqueue("poison.png", sha256(b"crashes recond"), 14, "t_poison")
    worker = Worker(settings, store)
    own = publish.staging_dir(settings.outbox, job.result_name, f"{worker.owner}-{job.id}")
    other = publish.staging_dir(settings.outbox, job.result_name, "another-daemon-1")
    for _ in range(settings.max_attempts):
        store.claim_next()
        for folder in (own, other):
            folder.mkdir(exist_ok=True)
        Worker(settings, store).recover()  # the restart after each crash
    assert store.get(job.id).state == FAILED and not own.exists() and other.exists()
    assert assert_in_one_place(b"crashes recond", settings.inbox, settings.outbox) == "failed failed/poison.png"


def test_corrupt_database_is_one_sentence_naming_the_file(settings: Settings) -> None:
    settings.state_dir.mkdir()
    settings.db_path.write_bytes(b"this is not a database, it was overwritten " * 100)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RECOND_")},
           "RECOND_INBOX": str(settings.inbox), "RECOND_OUTBOX": str(settings.outbox),
           "RECOND_STATE_DIR": str(settings.state_dir)}
    for command in (["recond.daemon"], ["recond.cli", "status"]):
        result = subprocess.run([sys.executable, "-m", *command], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert str(settings.db_path) in result.stderr and "move it aside" in result.stderr
        assert "Traceback" not in result.stderr


def test_database_of_another_user_is_one_sentence(open_dir: Path) -> None:
    state = open_dir / "state"
    Store(state / "recond.db").close()
    (state / "recond.db").chmod(0o600)  # root's; reconctl runs as uid 65534
    result = as_nobody(sys.executable, "-m", "recond.cli", "status",
                       env={"RECOND_STATE_DIR": str(state), "RECOND_INBOX": str(open_dir / "inbox"),
                            "RECOND_OUTBOX": str(open_dir / "outbox")})
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert str(state / "recond.db") in result.stderr and "read and write access" in result.stderr


def test_no_writable_home_gives_the_numba_cache_fix(open_dir: Path) -> None:
    # A model file in rembg_home, so that the remover imports rembg (whose pymatting compiles
    # numba kernels into a cache); without one it no longer imports rembg at all.
    (open_dir / "u2net.onnx").write_bytes(b"placeholder")
    probe = ("from recond.config import load_settings\n"
             "from recond.errors import loading_fix\n"
             "from recond.pipeline.background import BackgroundRemover\n"
             f"try:\n    BackgroundRemover(load_settings(rembg_home={str(open_dir)!r}))\n"
             "except Exception as error:\n    print(loading_fix(error))\n")
    result = as_nobody(sys.executable, "-c", probe)
    assert "NUMBA_CACHE_DIR" in result.stdout, result.stderr[-2000:]
    assert "fix the setting named above" not in result.stdout
