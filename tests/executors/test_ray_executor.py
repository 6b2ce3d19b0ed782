"""executor = "ray": the real `recond` process on a real local Ray cluster (one per module,
started as docs/ray.md says: conftest.py), with the tiny checkpoint and real pictures. The
cluster listens on loopback only and refuses a client without the token; an actor killed with
SIGKILL mid-job, a daemon stopped with SIGTERM while jobs are on Ray, and the raylet killed
with SIGKILL mid-queue lose nothing and publish nothing twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any


from helpers.paths import REPO
from helpers.places import assert_in_one_place
from helpers.ray_cluster import RayCluster
from helpers.installation import SLOWER_JOB

from helpers.ray_jobs import SLOW_DEVICE_PART, all_done, assert_each_published_once, daemon_workers, drop, job_rows
SIX_PICTURES = ("chair.png", "flamingo.png", "hamburger.png", "horse.png", "police_woman.png", "robot.png")
def test_without_ray_installed_the_daemon_stops_with_one_line_naming_the_extra(tmp_path):
    config = tmp_path / "recond.toml"
    config.write_text(f'executor = "ray"\ninbox = "{tmp_path / "inbox"}"\n'
                      f'outbox = "{tmp_path / "outbox"}"\nstate_dir = "{tmp_path / "state"}"\n')
    # sys.modules["ray"] = None makes `import ray` fail as on a machine without the extra.
    run = subprocess.run([sys.executable, "-c", "import sys; sys.modules['ray'] = None; "
                          "from recond.daemon import main; main()", "--config", str(config)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "pip install -e '.[ray]'" in run.stderr
    assert not (tmp_path / "state").exists()  # stopped before it touched anything


def test_actor_killed_mid_job_restarts_and_the_job_is_retried_without_a_second_result(on_ray):
    setup = on_ray(**SLOW_DEVICE_PART)
    setup.start()
    dropped = drop(setup, ("chair.png", "robot.png"))
    deadline = time.monotonic() + 90
    victim: dict[str, Any] | None = None
    while victim is None:  # the actor as soon as it holds a job
        assert time.monotonic() < deadline, setup.stderr()
        busy = [worker for worker in daemon_workers(setup) if worker["kind"] == "device" and worker["busy"]]
        victim = busy[0] if busy else None
        time.sleep(0.01)
    os.kill(victim["pid"], signal.SIGKILL)

    setup.wait(all_done(2), timeout=120)
    assert_each_published_once(setup, dropped)
    attempts = {row["id"]: row["attempts"] for row in job_rows(setup)}
    assert attempts[victim["job_id"]] == 2  # the lost run counted, the retry published
    assert "ray device actor lost" in (setup.root / "daemon.stderr").read_text()
    restarted = setup.wait(lambda status: any(
        worker["kind"] == "device" and worker["pid"] not in (None, victim["pid"])
        and "restarting" not in worker["device"] for worker in status["daemon"]["workers"]))
    assert restarted["counts"]["failed"] == 0


def test_sigterm_puts_jobs_on_ray_back_in_the_queue_and_a_restart_finishes_them(on_ray):
    setup = on_ray()
    setup.start()
    dropped = drop(setup, ("chair.png", "flamingo.png", "horse.png"))
    deadline = time.monotonic() + 90
    while not any(worker["busy"] for worker in daemon_workers(setup)):
        assert time.monotonic() < deadline, setup.stderr()
        time.sleep(0.01)
    assert setup.stop() == 0, setup.stderr()

    rows = job_rows(setup)
    assert not [row for row in rows if row["state"] == "running"]
    assert all(row["attempts"] == 0 for row in rows if row["state"] == "queued")  # not a crash
    assert any(row["state"] == "queued" for row in rows)
    for data in dropped.values():
        assert_in_one_place(data, setup.inbox, setup.outbox)

    setup.start()  # finds the same cluster again and carries on
    setup.wait(all_done(3), timeout=120)
    assert_each_published_once(setup, dropped)


def test_six_pictures_through_ray_client_give_six_results_once_each_and_status_names_the_actor(
        on_ray, ray_cluster):
    # ray://: no shared sockets, as off the cluster. Each Ray Client connection (the probe's, then
    # the join) starts a server process on the head; on a busy 2-core CI machine the join once
    # took over the default 60 s, so the limit here matches the head's 120 s channel timeout.
    setup = on_ray(ray_address=ray_cluster.client_address, ray_connect_seconds=150)
    setup.start()
    dropped = drop(setup, SIX_PICTURES)
    status = setup.wait(all_done(6), timeout=300)
    assert_each_published_once(setup, dropped)
    assert status["counts"]["failed"] == 0
    devices = [worker for worker in status["daemon"]["workers"] if worker["kind"] == "device"]
    assert len(devices) == 1  # ray_device_workers = 0 on a cluster without GPUs: one CPU actor
    assert devices[0]["device"] == "cpu" and devices[0]["node"].endswith(f"({socket.gethostname()})")
    assert devices[0]["pid"] != setup.process.pid  # the model lives in the actor, not the daemon
    record = json.loads((setup.result_folders()[0] / "job.json").read_text())
    assert record["handoff"]["bytes"]["total"] > 0  # what went from the actor to the host task
    text = setup.reconctl("status").stdout
    assert "ray: 1 × cpu" in text and "ray-device-0 (cpu on " in text


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:")
    return host.startswith("127.") or host == "::1"


def test_the_cluster_as_the_docs_start_it_listens_on_loopback_only(ray_cluster):
    listening = ray_cluster.listening()
    port = ray_cluster.address.rsplit(":", 1)[1]
    assert any(address.endswith(f":{port}") and name == "gcs_server" for address, name in listening), listening
    assert [entry for entry in listening if not is_loopback(entry[0])] == [], listening


def probe(ray_cluster: RayCluster, environment: dict[str, str]) -> subprocess.CompletedProcess:
    """recond's own probe (recond/executors/ray_probe.py) run with exactly ``environment``."""
    outer = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_", "RECOND_"))}
    return subprocess.run([sys.executable, "-m", "recond.executors.ray_probe", ray_cluster.address],
                          env={**outer, **environment}, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_cluster_refuses_a_client_without_the_token_and_recond_sees_its_auth(ray_cluster, tmp_path):
    joined = probe(ray_cluster, ray_cluster.environment)
    assert joined.returncode == 0, joined.stderr[-2000:]
    facts = json.loads(joined.stdout.splitlines()[-1])
    assert facts == {"nodes": ["127.0.0.1"], "token_auth": True}

    (tmp_path / "home").mkdir()
    without_token = {**ray_cluster.environment, "HOME": str(tmp_path / "home")}
    without_token.pop("RAY_AUTH_MODE")  # a client that does not ask for token auth at all
    refused = probe(ray_cluster, without_token)
    assert refused.returncode != 0 and "InvalidAuthToken" in refused.stderr, refused.stderr[-2000:]


def pid_running(pid: int) -> bool:
    """A live process (not a zombie) with this pid."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


STOP_FLOOR_S = 20.0


def test_a_ray_host_task_frozen_with_sigstop_is_killed_at_its_limit_and_the_job_retried(on_ray):
    # A 20 s floor: the frozen run is stopped within it, and the retry, on a fresh Ray worker beside
    # a loaded suite, keeps room (a fresh clone's run once had its retry stopped too at 10 s).
    setup = on_ray(stage_limit_factor=1.0, stage_limit_floor_s=STOP_FLOOR_S, **SLOWER_JOB)
    setup.start()
    dropped = drop(setup, ("robot.png",))
    setup.wait_for_stage(("texture", "export", "render"), timeout=120)
    deadline = time.monotonic() + 30
    while not (victims := [worker["pid"] for worker in daemon_workers(setup)  # its Ray worker, as reported
                           if worker["kind"] == "host" and worker["pid"]]):
        assert time.monotonic() < deadline, setup.stderr()
        time.sleep(0.05)
    with open(f"/proc/{victims[0]}/cmdline", "rb") as cmdline:
        assert cmdline.read().startswith(b"ray::host_part_on_node")  # Ray's title for a busy worker
    os.kill(victims[0], signal.SIGSTOP)

    status = setup.wait(all_done(1), timeout=120)
    assert_each_published_once(setup, dropped)
    assert [row["attempts"] for row in job_rows(setup)] == [2], setup.stderr()  # the frozen run, then the one that published
    stop = status["daemon"]["host_stops"][0]
    assert stop["pid"] == victims[0] and stop["seconds"] > stop["limit_s"] == STOP_FLOOR_S
    assert not pid_running(victims[0])
    assert "ray host task stopped: a stage ran past its limit" in setup.stderr()
    assert f"stopped: #{stop['job_id']} robot.png" in setup.reconctl("status").stdout
