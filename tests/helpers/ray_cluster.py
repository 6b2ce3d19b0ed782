"""The Ray tests' cluster and daemons (fixtures: import them into a test module), started from the lines of docs/ray.md ("One machine"), so that what the
docs promise (token authentication, loopback only) is what the tests run on: no variable of
their own (issue 26: the old fixture turned authentication off with RAY_AUTH_MODE=disabled).

What the fixture changes, and why: HOME is a temporary folder (the token the docs' lines make
lands there, not in the real ~/.ray); the port is a free one instead of 6379; and the `ray start`
line gets test-only flags: --block (in the foreground, so SIGTERM to it stops every Ray process
it started), 2 CPUs, no dashboard, a small object store, a short --temp-dir (Ray's socket paths
must fit in 107 bytes) and a free Ray Client port.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.installation import Installation
from helpers.paths import REPO

DOCS = REPO / "docs" / "ray.md"
CLUSTER_START_SECONDS = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def documented_head_lines() -> list[str]:
    """The shell lines of docs/ray.md's one-machine block, comments removed."""
    text = DOCS.read_text()
    block = text.split("<!-- one-machine-head")[1].split("<!-- /one-machine-head -->")[0]
    code = block.split("```bash")[1].split("```")[0]
    return [line.split("  #")[0].strip() for line in code.splitlines() if line.strip()]


def documented_environment(lines: list[str]) -> dict[str, str]:
    """The variables the docs export (the daemon needs them too)."""
    exported = [line for line in lines if line.startswith("export ")]
    return dict(pair.split("=", 1) for line in exported for pair in line.split()[1:])


@dataclass(frozen=True)
class RayCluster:
    address: str  # host:port, as a daemon on a cluster node joins
    client_address: str  # ray://host:port, Ray Client, as a daemon off the cluster joins
    environment: dict[str, str]  # what docs/ray.md says a joining process needs (and HOME)
    head: subprocess.Popen[bytes]
    temp: Path
    home: Path  # HOME of the head and its clients: the token is in .ray/auth_token there

    def processes(self) -> list[int]:
        """The head's process and all its descendants (GCS, raylet, workers ...)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(parent, []).append(int(entry.name))
        found, todo = [], [self.head.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def listening(self) -> list[tuple[str, str]]:
        """(local address, process) of every TCP socket the cluster's processes listen on."""
        pids = set(self.processes())
        lines = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
        found = []
        for line in lines.splitlines():
            fields = line.split()
            for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
                if int(pid) in pids:
                    found.append((fields[3], name))
        return found

    def raylet(self) -> int:
        for pid in self.processes():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    return pid
            except OSError:
                continue
        raise AssertionError("no raylet among the cluster's processes")


def start_documented_cluster(home: Path, port: int | None = None) -> RayCluster:
    """A cluster as the docs start it, its token in ``home``/.ray (made there once, as the docs'
    lines do: a cluster started again with the same home keeps the token its clients have)."""
    port, client_port = port or free_port(), free_port()
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    lines = documented_head_lines()
    start = next(line for line in lines if " start --head" in line)
    assert "--port=6379" in start, start
    test_start = start.replace("--port=6379", f"--port={port}") + (
        f" --block --num-cpus=2 --include-dashboard=false --object-store-memory={100 * 1024 * 1024}"
        f" --temp-dir={temp} --ray-client-server-port={client_port}")
    script = "set -e\n" + "\n".join(lines[:lines.index(start)]) + f"\nexec {test_start}\n"
    environment = {**documented_environment(lines), "HOME": str(home)}
    outer = {key: value for key, value in os.environ.items()
             if not key.startswith(("RAY_", "RECOND_"))}
    # Workers import the checkout under test. A first Ray Client server on a busy 2-core machine
    # may take over Ray's 30 s to answer (a timing knob, not a security one).
    env = {**outer, "HOME": str(home), "PYTHONPATH": str(REPO),
           "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "120"}
    head = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=(temp / "head.log").open("wb"), start_new_session=True)
    deadline = time.monotonic() + CLUSTER_START_SECONDS
    while not any(temp.glob("session_*/logs/raylet.out")):
        if head.poll() is not None or time.monotonic() > deadline:
            stop_cluster(head, temp)
            raise AssertionError((temp / "head.log").read_text())
        time.sleep(0.2)
    return RayCluster(f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}",
                      {**environment, "PYTHONPATH": str(REPO)}, head, temp, home)


def stop_cluster(head: subprocess.Popen[bytes], temp: Path) -> None:
    head.terminate()
    try:
        head.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """A one-node Ray cluster of 2 CPUs, started as docs/ray.md says (module docstring)."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    home = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    cluster = start_documented_cluster(home)
    try:
        yield cluster
    finally:
        stop_cluster(cluster.head, cluster.temp)
        shutil.rmtree(home, ignore_errors=True)


class RayInstallation(Installation):
    """An installation whose daemon gets the environment docs/ray.md gives it."""

    environment: dict[str, str] = {}

    def start(self, *arguments: str, wrapper: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> subprocess.Popen:
        return super().start(*arguments, wrapper=wrapper, env={**self.environment, **(env or {})})


@pytest.fixture
def on_ray(tmp_path: Path, tiny_model_dir: Path, shared_dir: Path, ray_cluster: RayCluster):
    """``on_ray(**settings)``: an installation whose daemon runs its jobs on the test cluster."""
    made: list[RayInstallation] = []

    def make(**settings) -> RayInstallation:
        setup = RayInstallation(tmp_path, tiny_model_dir, shared_dir / "examples", **{
            "executor": "ray", "ray_address": ray_cluster.address, "model_retry_seconds": 1, **settings})
        setup.environment = ray_cluster.environment
        made.append(setup)
        return setup

    yield make
    for setup in made:
        setup.stop()
