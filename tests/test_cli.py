"""`reconctl` through click's CliRunner against a real job database in tmp_path."""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from recond.cli import cli
from recond.config import Settings, load_settings
from recond.inbox.failed import move_to_failed
from recond.pipeline.record import write_record
from recond.store import Store

HERE = socket.gethostname()  # where a local executor's workers run


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "recond.toml"
    path.write_text(f'inbox = "{tmp_path / "inbox"}"\noutbox = "{tmp_path / "outbox"}"\n'
                    f'state_dir = "{tmp_path / "state"}"\nmodel = "{tmp_path / "no-weights"}"\n'
                    'device = "cpu"\n')
    (tmp_path / "inbox").mkdir()
    return path


def settings_of(config: Path) -> Settings:
    return load_settings(config)


def reconctl(config: Path, *arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), *arguments])
    return result.exit_code, result.output


def test_status_before_the_daemon_ever_ran_says_down_with_zero_counts(config: Path) -> None:
    code, output = reconctl(config, "status", "--json")
    report = json.loads(output)
    assert code == 0 and report["daemon"]["running"] is False
    assert report["counts"] == {"queued": 0, "running": 0, "done": 0, "failed": 0, "duplicate": 0}
    assert report["running"] == [] and report["recent"] == [] and report["daemon"]["workers"] == []


def test_status_shows_the_live_daemon_running_jobs_and_recent_results(config: Path, tmp_path: Path) -> None:
    store = Store(settings_of(config).db_path)
    store.daemon_started(os.getpid())  # this test process stands for a live daemon
    store.daemon_update(model_status="ready", device="cpu", dtype="bfloat16 (CPU has avx512_bf16)",
                        watcher_warnings=["inbox missing"])
    done, _ = store.enqueue("a.jpg", "aa", 1, "t_a")
    store.claim_next()
    store.finish(done.id, tmp_path / "outbox" / "t_a", [])
    hosted, _ = store.enqueue("kitchen/b.jpg", "bb", 1, "t_b")
    on_device, _ = store.enqueue("c.jpg", "cc", 1, "t_c")
    store.claim_next()
    store.claim_next()
    store.report_progress(hosted.id, "texture", 0.42, 75.0)
    store.report_progress(on_device.id, "grid", 0.2, 90.0)
    store.daemon_update(workers=[
        {"name": "device", "kind": "device", "node": HERE, "device": "cpu", "busy": True, "job_id": on_device.id},
        {"name": "host-0", "kind": "host", "node": HERE, "device": "cpu", "busy": True, "job_id": hosted.id},
        {"name": "host-1", "kind": "host", "node": HERE, "device": "cpu", "busy": False, "job_id": None}])

    report = json.loads(reconctl(config, "status", "--json")[1])
    assert report["daemon"]["running"] is True and report["daemon"]["pid"] == os.getpid()
    assert report["counts"]["done"] == 1 and report["counts"]["running"] == 2
    assert [(job["id"], job["source"], job["stage"], job["progress"], job["eta_s"]) for job in report["running"]] == [
        (hosted.id, "kitchen/b.jpg", "texture", 0.42, 75.0), (on_device.id, "c.jpg", "grid", 0.2, 90.0)]
    assert [(job["stage_seconds"], job["stage_expected_s"], job["stage_overdue"])
            for job in report["running"]] == [(None, None, False)] * 2
    assert [worker["busy"] for worker in report["daemon"]["workers"]] == [True, True, False]
    assert report["recent"][0]["output"] == str(tmp_path / "outbox" / "t_a")
    code, text = reconctl(config, "status")
    assert code == 0 and f"up (pid {os.getpid()}" in text
    assert "model:  ready on cpu in bfloat16 (CPU has avx512_bf16)" in text
    assert "kitchen/b.jpg: texture 42%, ETA 1m 15s" in text and "c.jpg: grid 20%, ETA 1m 30s" in text
    assert f"workers: 2 of 3 busy: device (cpu, job #{on_device.id}), host-0 (cpu, job #{hosted.id}), host-1 (cpu)" in text
    assert "warning:" in text


def test_status_names_the_node_of_a_worker_on_another_machine(config: Path) -> None:
    store = Store(settings_of(config).db_path)
    store.daemon_started(os.getpid())
    store.daemon_update(model_status="ready", device="ray: 1 × cuda", workers=[
        {"name": "ray-device-0", "kind": "device", "node": "10.0.0.7 (gpu1)", "device": "cuda",
         "busy": True, "job_id": 41, "pid": 4242}])
    code, text = reconctl(config, "status")
    assert code == 0 and "model:  ready on ray: 1 × cuda" in text
    assert "workers: 1 of 1 busy: ray-device-0 (cuda on 10.0.0.7 (gpu1), job #41)" in text


def test_status_says_down_when_the_recorded_daemon_process_is_gone(config: Path) -> None:
    store = Store(settings_of(config).db_path)
    store.daemon_started(2**22 + 12345)  # above the default pid_max: no such process
    code, output = reconctl(config, "status")
    assert code == 0 and output.startswith("recond: down")


def test_status_flags_a_daemon_whose_heartbeat_stopped(config: Path) -> None:
    store = Store(settings_of(config).db_path)
    store.daemon_started(os.getpid())
    store.daemon_update(heartbeat_at=time.time() - 600)
    assert "NOT RESPONDING" in reconctl(config, "status")[1]


def test_status_of_a_stopped_daemon_shows_no_model_state_and_the_last_background(
        config: Path, tmp_path: Path) -> None:
    store = Store(settings_of(config).db_path)
    store.daemon_started(os.getpid())
    store.daemon_update(model_status="ready", device="cpu", stopped_at=time.time())
    job, _ = store.enqueue("a.png", "aa", 1, "t_a")
    store.claim_next()
    result_dir = tmp_path / "outbox" / "t_a"
    result_dir.mkdir(parents=True)
    write_record(result_dir, {"background": "alpha", "stage_seconds": {"load": 0.02, "reconstruct": 41.5}})
    store.finish(job.id, result_dir, [])
    code, text = reconctl(config, "status")
    assert code == 0 and text.startswith("recond: down (stopped ")
    assert f"state:  {tmp_path / 'state'}" in text and "model:" not in text
    assert f"background: job #{job.id} used alpha" in text
    code, shown = reconctl(config, "show", str(job.id))
    assert "stage_seconds: load 0.0 s, reconstruct 41.5 s" in shown and "background: alpha" in shown


def test_jobs_and_show_list_what_the_store_holds(config: Path) -> None:
    store = Store(settings_of(config).db_path)
    job, _ = store.enqueue("a.jpg", "aa", 7, "t_a")
    store.claim_next()
    store.fail(job.id, "a.jpg is not a picture")
    code, listing = reconctl(config, "jobs")
    assert code == 0 and f"#{job.id}" in listing and "a.jpg is not a picture" in listing
    shown = json.loads(reconctl(config, "show", str(job.id), "--json")[1])
    assert shown["state"] == "failed" and shown["size"] == 7 and shown["attempts"] == 1
    code, output = reconctl(config, "show", "999")
    assert code == 1 and "no job 999" in output


def test_retry_moves_a_failed_file_back_into_the_inbox(config: Path) -> None:
    settings = settings_of(config)
    store = Store(settings.db_path)
    (settings.inbox / "sub").mkdir()
    (settings.inbox / "sub" / "a.jpg").write_bytes(b"bytes")
    job, _ = store.enqueue("sub/a.jpg", "aa", 5, "t_a")
    kept = move_to_failed(settings.inbox, job.source_name, job.id, "boom")
    store.fail(job.id, "boom", kept_at=kept)
    assert (settings.inbox / "failed" / "a.jpg.error.txt").is_file()
    code, output = reconctl(config, "retry", str(job.id))
    assert code == 0 and (settings.inbox / "sub" / "a.jpg").read_bytes() == b"bytes"
    assert not list((settings.inbox / "failed").iterdir())
    code, output = reconctl(config, "retry", str(job.id))  # the file is gone from failed/ now
    assert code == 1 and "no longer in" in output


def test_retry_refuses_a_job_that_did_not_fail(config: Path) -> None:
    store = Store(settings_of(config).db_path)
    job, _ = store.enqueue("a.jpg", "aa", 1, "t_a")
    code, output = reconctl(config, "retry", str(job.id))
    assert code == 1 and "only failed jobs" in output


def test_retry_of_a_failed_redo_leaves_the_old_results_picture_where_it_is(config: Path) -> None:
    settings = settings_of(config)
    store = Store(settings.db_path)
    old = settings.outbox / "t_chair"
    old.mkdir(parents=True)
    (old / "source.png").write_bytes(b"picture")
    job = store.enqueue_redo("chair.png", "cc", 7, "t_redo", "t_chair", None, {})
    store.fail(job.id, "boom", kept_at=old / "source.png")
    code, output = reconctl(config, "retry", str(job.id))
    assert code == 1 and "reconctl redo t_chair" in output
    assert (old / "source.png").read_bytes() == b"picture"


def test_redo_refuses_a_folder_that_is_no_result_and_an_unknown_preset(config: Path) -> None:
    settings = settings_of(config)
    (settings.outbox / "not_a_result").mkdir(parents=True)
    code, output = reconctl(config, "redo", "not_a_result")
    assert code == 1 and "is not a published result" in output
    code, output = reconctl(config, "redo", "not_a_result", "--preset", "quick")
    assert code == 1
    code, output = reconctl(config, "redo", "../etc")
    assert code == 1 and "not a result folder" in output
    code, output = reconctl(config, "redo", "not_a_result", "--set", "render_views")
    assert code == 1 and "KEY=VALUE" in output


def test_doctor_reports_missing_weights_with_the_fix_and_fails(config: Path) -> None:
    code, output = reconctl(config, "doctor", "--json")
    checks = {check["name"]: check for check in json.loads(output)}
    assert code == 1
    assert checks["weights"]["level"] == "fail" and "RECOND_MODEL" in checks["weights"]["message"]
    assert checks["ffmpeg"]["level"] == "ok" and "ffmpeg version" in checks["ffmpeg"]["message"]
    assert checks["inbox"]["level"] == "ok" and checks["outbox"]["level"] == "warn"
    assert checks["daemon"]["level"] == "warn"


def test_doctor_fails_on_devices_naming_a_gpu_torch_does_not_see(config: Path) -> None:
    import torch

    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor", "--json"],
                                env={"RECOND_DEVICES": f"cpu,cuda:{seen}"})
    gpu = next(check for check in json.loads(result.output) if check["name"] == "gpu")
    assert gpu["level"] == "fail" and f"devices names cuda:{seen} but torch sees {seen}" in gpu["message"]


def test_doctor_loads_real_weights(config: Path, tiny_model_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor"],
                                env={"RECOND_MODEL": str(tiny_model_dir)})
    line = next(line for line in result.output.splitlines() if " weights " in line)
    assert line.startswith("OK") and "loads" in line
    dtype = str(settings_of(config).resolved_dtype())  # this machine's choice, e.g. bfloat16 (CPU has ...)
    assert any(line.startswith("OK") and line.endswith(dtype) for line in result.output.splitlines())


def test_bad_setting_is_one_line_naming_it(config: Path) -> None:
    config.write_text(config.read_text() + "settle_seconds = -1\n")
    code, output = reconctl(config, "status")
    assert code == 1 and "settle_seconds" in output and len(output.strip().splitlines()) == 1


def test_process_prints_a_folder_per_picture_and_fails_on_a_bad_one(
        config: Path, tmp_path: Path, tiny_model_dir: Path, shared_dir: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a picture")
    out = tmp_path / "results"
    env = {"RECOND_MC_RESOLUTION": "32", "RECOND_TEXTURE_RESOLUTION": "128",
           "RECOND_RENDER_VIEWS": "4", "RECOND_RENDER_SIZE": "64",
           "RECOND_REMBG_HOME": str(tmp_path / "no-rembg-models")}
    result = CliRunner().invoke(cli, ["--config", str(config), "process",
                                      str(shared_dir / "examples" / "chair.png"), str(broken),
                                      "--out", str(out), "--model", str(tiny_model_dir)], env=env)
    assert result.exit_code == 1, result.output
    folders = [path for path in out.iterdir()]
    assert len(folders) == 1 and (folders[0] / "index.html").is_file()
    assert f"chair.png: {folders[0]}" in result.output
    assert "broken.png: failed:" in result.output


def test_process_with_a_preset_makes_it_with_the_presets_settings(
        config: Path, tmp_path: Path, tiny_model_dir: Path, shared_dir: Path) -> None:
    import json

    config.write_text(config.read_text() + "\n[presets.quick]\nrender_views = 2\n")
    out = tmp_path / "results"
    env = {"RECOND_MC_RESOLUTION": "32", "RECOND_TEXTURE_RESOLUTION": "128",
           "RECOND_RENDER_VIEWS": "4", "RECOND_RENDER_SIZE": "64",
           "RECOND_REMBG_HOME": str(tmp_path / "no-rembg-models")}
    picture = str(shared_dir / "examples" / "chair.png")
    unknown = CliRunner().invoke(cli, ["--config", str(config), "process", picture,
                                       "--preset", "slow", "--out", str(out)], env=env)
    assert unknown.exit_code == 1 and "no preset 'slow'" in unknown.output
    result = CliRunner().invoke(cli, ["--config", str(config), "process", picture, "--preset",
                                      "quick", "--out", str(out), "--model", str(tiny_model_dir)], env=env)
    assert result.exit_code == 0, result.output
    (folder,) = out.iterdir()
    record = json.loads((folder / "job.json").read_text())
    assert record["preset"] == "quick" and record["settings"]["render_views"] == 2
    assert len(list(folder.glob("render_*.png"))) == 2
    assert "job.json" in record["files"]


def test_an_overdue_warning_says_what_is_true_of_its_stage(config: Path) -> None:
    store = Store(settings_of(config).db_path)
    store.daemon_started(os.getpid())
    long_ago = time.time() - 60
    for name, stage in (("slow-mesh.jpg", "mesh"), ("frozen-video.jpg", "render")):
        job, _ = store.enqueue(name, name, 1, f"t_{stage}")
        store.claim_next()
        store.report_progress(job.id, stage, 0.5, 1.0, stage_started_at=long_ago, stage_expected_s=0.8)
    code, text = reconctl(config, "status")
    mesh, render = (line for line in text.splitlines() if line.startswith("warning: the "))
    assert mesh.startswith("warning: the mesh stage has run 1m") and "child process" not in mesh
    assert "recond does not stop this stage itself" in mesh
    assert "its ffmpeg child process is stopped at the stage's limit" in render


def test_logs_prints_the_last_lines_readably_and_follows_new_ones(config: Path) -> None:
    import subprocess
    import sys

    log = settings_of(config).log_path
    log.parent.mkdir(parents=True, exist_ok=True)
    records = [{"job": number, "file": f"p{number}.png", "event": "job done", "level": "info",
                "timestamp": f"2026-12-07T01:00:{number:02d}.000000Z"} for number in range(60)]
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    code, output = reconctl(config, "logs", "-n", "3")
    assert code == 0
    assert output.splitlines() == [f"2026-12-07 01:00:{n} info    job done  job={n} file=p{n}.png" for n in (57, 58, 59)]
    code, output = reconctl(config, "logs", "-n", "1", "--json")
    assert json.loads(output) == records[-1]

    follower = subprocess.Popen([sys.executable, "-m", "recond.cli", "--config", str(config), "logs", "-f",
                                 "-n", "0"], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert follower.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
    try:
        # A line is appended until the follower shows one: when it reaches the log's end is its
        # own business (a Python start, seconds on a busy machine), and -n 0 skips what came before.
        deadline, first = time.monotonic() + 60, None
        while first is None and time.monotonic() < deadline:
            with log.open("a") as appended:
                appended.write(json.dumps({"event": "recond started", "level": "info",
                                           "timestamp": "2026-12-07T02:00:00.0Z", "pid": 7}) + "\n")
            try:
                first = lines.get(timeout=0.5)
            except queue.Empty:
                continue
        assert first is not None and first.strip() == "2026-12-07 02:00:00 info    recond started  pid=7"
    finally:
        follower.terminate()
        follower.wait(10)


def test_logs_before_any_run_says_there_is_none(config: Path) -> None:
    code, output = reconctl(config, "logs")
    assert code == 1 and "no log at" in output


@pytest.mark.parametrize(("override", "complaint"), [
    ("mc_resolution=8", "mc_resolution"), ("bake_texture=maybe", "bake_texture"),
    ("no_such_key=1", "one of the job settings"), ("mc_resolution", "KEY=VALUE")])
def test_process_set_is_checked_like_the_settings(config: Path, tmp_path: Path, override: str,
                                                  complaint: str) -> None:
    picture = tmp_path / "p.png"
    picture.write_bytes(b"not read: the option is refused first")
    code, output = reconctl(config, "process", str(picture), "--set", override)
    assert code == 2 and complaint in output and "--set" in output, output


def test_process_set_changes_this_run_only(config: Path, tmp_path: Path, tiny_model_dir: Path,
                                           shared_dir: Path) -> None:
    out = tmp_path / "results"
    env = {"RECOND_MC_RESOLUTION": "32", "RECOND_TEXTURE_RESOLUTION": "128", "RECOND_RENDER_SIZE": "64",
           "RECOND_REMBG_HOME": str(tmp_path / "no-rembg-models")}
    result = CliRunner().invoke(cli, ["--config", str(config), "process", str(shared_dir / "examples" / "chair.png"),
                                      "--out", str(out), "--model", str(tiny_model_dir),
                                      "--set", "render_views=3", "--set", "bake_texture=false"], env=env)
    assert result.exit_code == 0, result.output
    [folder] = list(out.iterdir())
    assert sorted(path.name for path in folder.glob("render_*.png")) == [f"render_00{n}.png" for n in range(3)]
    record = json.loads((folder / "job.json").read_text())
    assert record["settings"]["render_views"] == 3 and record["settings"]["bake_texture"] is False
    assert settings_of(config).render_views == 30  # the settings file is untouched


def test_help_points_to_the_log_the_settings_and_the_docs() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert "reconctl logs" in result.output and "config/recond.toml" in result.output and "docs/" in result.output
