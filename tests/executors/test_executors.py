"""Jobs in flight on host processes (recond/executors/local.py): real processes, the real
pipeline on the tiny checkpoint, a real job database.

The same pictures give the same files with host_workers = 2 as with 0; a host process killed
with SIGKILL costs its job one attempt and is replaced; SIGTERM to the daemon puts every job in
flight back without counting an attempt, and leaves no host process behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.places import assert_in_one_place
from helpers.settings import settings_for
from helpers.waiting import wait_for
from helpers.installation import SLOWER_JOB, Installation, counts

from recond.outbox.publish import STAGING_SUFFIX
from recond.pipeline.names import RECORD_NAME
from recond.store import DONE, FAILED, Store
from recond.worker import Worker

from helpers.daemon_rows import busy_host_workers, daemon_row, pid_exists
SMALL = {"mc_resolution": 32, "texture_resolution": 128, "render_views": 4, "render_size": 64, "video_fps": 4}
PICTURES = ("chair.png", "robot.png", "flamingo.png")
# job.json facts that differ between two runs of the same picture: when and how long.
RUN_FACTS = {"stage_seconds"}


def result_files(folder: Path) -> dict[str, Any]:
    """A result folder's files: bytes' hashes, and job.json without the run's timings."""
    files: dict[str, Any] = {}
    for path in sorted(folder.iterdir()):
        if path.name == RECORD_NAME:
            record = json.loads(path.read_text())
            files[path.name] = {key: value for key, value in record.items() if key not in RUN_FACTS}
        else:
            files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def process_all(tmp_path: Path, model_dir: Path, examples: Path,
                host_workers: int) -> tuple[dict[str, dict[str, Any]], int]:
    """Queue PICTURES, run a worker with ``host_workers`` until all are done: their files by
    picture, and the most jobs seen in flight at once."""
    settings = settings_for(tmp_path, model=str(model_dir), device="cpu", rembg_home=tmp_path.parent / "no-rembg",
                            host_workers=host_workers, **SMALL)
    store = Store(settings.db_path)
    for name in PICTURES:
        data = (examples / name).read_bytes()
        (settings.inbox / name).write_bytes(data)
        store.enqueue(name, hashlib.sha256(data).hexdigest(), len(data), f"20260101-000000_{Path(name).stem}")
    worker = Worker(settings, store)
    in_flight: list[int] = []
    worker.start()
    try:
        wait_for(lambda: store.counts()[DONE] == len(PICTURES), timeout=240,
                 tick=lambda: in_flight.append(len(store.running())))
    finally:
        worker.stop()
    assert store.counts()[FAILED] == 0
    files = {Path(job.output).name.split("_", 1)[1]: result_files(Path(job.output)) for job in store.jobs(DONE)}
    return files, max(in_flight)


def test_two_host_workers_make_the_same_files_as_one_job_at_a_time(tmp_path: Path, tiny_model_dir: Path,
                                                                     shared_dir: Path) -> None:
    examples = shared_dir / "examples"
    whole, one_at_a_time = process_all(tmp_path / "inline", tiny_model_dir, examples, host_workers=0)
    split, at_once = process_all(tmp_path / "pool", tiny_model_dir, examples, host_workers=2)
    assert one_at_a_time == 1 and 2 <= at_once <= 3  # host_workers + 1 at most
    assert sorted(whole) == ["chair", "flamingo", "robot"]
    for picture, files in whole.items():
        assert sorted(split[picture]) == sorted(files), picture  # the same file names ...
        for name, content in files.items():  # ... with the same bytes (job.json: but its timings)
            assert split[picture][name] == content, f"{picture}: {name} differs"
        assert {"mesh.obj", "mesh_texture.png", "mesh.glb", "mesh.stl", "render.mp4"} <= set(files)
        assert files[RECORD_NAME]["handoff"]["bytes"]["total"] > 0


def host_worker_pids(installation: Installation) -> list[int]:
    workers = json.loads(daemon_row(installation).get("workers") or "[]")
    return [worker["pid"] for worker in workers if worker["kind"] == "host"]


@pytest.fixture
def pool(tmp_path: Path, tiny_model_dir: Path, shared_dir: Path) -> Any:
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples", host_workers=2, **SLOWER_JOB)
    yield installation
    installation.stop()


def test_host_worker_killed_mid_job_costs_one_attempt_and_is_replaced(pool: Installation) -> None:
    pool.start()
    pool.drop_like_a_share("flamingo.png")
    victim = wait_for(lambda: busy_host_workers(pool), timeout=90)[0]
    os.kill(victim["pid"], signal.SIGKILL)
    status = pool.wait(lambda s: counts(s)["done"] == 1)
    assert counts(status)["failed"] == counts(status)["queued"] == counts(status)["running"] == 0
    job = json.loads(pool.reconctl("show", str(status["recent"][0]["id"]), "--json").stdout)
    assert job["attempts"] == 2  # the killed run, then the one that published
    folders = pool.result_folders()
    assert len(folders) == 1 and not folders[0].name.startswith(".")  # one result, no partial left
    assert_in_one_place((pool.examples / "flamingo.png").read_bytes(), pool.inbox, pool.outbox)
    replacements = host_worker_pids(pool)
    assert len(replacements) == 2 and victim["pid"] not in replacements
    assert "died (killed by SIGKILL)" in pool.stderr()


def test_host_worker_killed_on_the_last_attempt_fails_the_job_into_failed(tmp_path: Path, tiny_model_dir: Path,
                                                                          shared_dir: Path) -> None:
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples", host_workers=1,
                                max_attempts=1, **SLOWER_JOB)
    try:
        installation.start()
        installation.drop_like_a_share("robot.png")
        os.kill(wait_for(lambda: busy_host_workers(installation), timeout=90)[0]["pid"], signal.SIGKILL)
        status = installation.wait(lambda s: counts(s)["failed"] == 1)
        assert "died (killed by SIGKILL)" in status["recent"][0]["error"]
        place = assert_in_one_place((installation.examples / "robot.png").read_bytes(), installation.inbox,
                                    installation.outbox)
        assert place.startswith("failed") and installation.result_folders() == []
    finally:
        installation.stop()


def test_sigterm_puts_every_job_in_flight_back_without_an_attempt(pool: Installation) -> None:
    pool.start()
    for name in PICTURES:
        pool.drop_like_a_share(name)
    wait_for(lambda: busy_host_workers(pool), timeout=90)
    in_flight = pool.wait(lambda s: len(s["running"]) >= 2)["running"]
    pids = host_worker_pids(pool)
    assert pool.stop() == 0
    status = pool.status()
    assert counts(status)["running"] == counts(status)["failed"] == 0
    assert counts(status)["queued"] + counts(status)["done"] == len(PICTURES)
    for job in in_flight:
        shown = json.loads(pool.reconctl("show", str(job["id"]), "--json").stdout)
        if shown["state"] != DONE:  # a job that had published before the signal stays done
            assert shown["state"] == "queued" and shown["attempts"] == 0 and shown["stage"] is None
    assert not [folder for folder in pool.outbox.iterdir() if folder.name.endswith(STAGING_SUFFIX)]  # no partial
    for name in PICTURES:
        assert_in_one_place((pool.examples / name).read_bytes(), pool.inbox, pool.outbox)
    deadline = time.monotonic() + 10
    while any(pid_exists(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if pid_exists(pid)]  # no host process outlives the daemon
