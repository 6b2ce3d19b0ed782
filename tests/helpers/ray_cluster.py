"""The Ray tests' cluster and daemons (fixtures: import them into a test module), started from the lines of docs/ray.md ("One machine"), so that what the
docs promise (token authentication, loopback only) is what the tests run on: no variable of
their own (issue 26: the old fixture turned authentication off with RAY_AUTH_MODE=disabled).

What the fixture changes, and why: HOME is a temporary folder (the token the docs' lines make
lands there, not in the real ~/.ray); the port is one of the test's own instead of 6379; and the
`ray start` line gets test-only flags: --block (in the foreground, so SIGTERM to it stops every
Ray process it started), 2 CPUs, no dashboard, a small object store, a short --temp-dir (Ray's
socket paths must fit in 107 bytes), and every port Ray listens on named (``RayPorts``).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.installation import Installation
from helpers.paths import REPO

DOCS = REPO / "docs" / "ray.md"
CLUSTER_START_SECONDS = 90


# Each cluster's ports come from a block of its own below the kernel's ephemeral range
# (net.ipv4.ip_local_port_range, 32768-60999 on Linux by default). Left to choose, `ray start`
# asks the kernel for a free port for each agent and hands the number on; the agent binds it
# seconds later. In that gap any outgoing connection of a test beside it may be given the same
# port, the agent fails, and the raylet ends with it (`ray start --block` then stops the whole
# cluster): CI saw a cluster die under a daemon before its first job. Blocks are split among the
# xdist workers, so two clusters started at once never share one. They start above 24000: the
# Ray Client proxy gives each connection a server on a port of 23000-24000
# (ray/util/client/server/proxier.py, MIN/MAX_SPECIFIC_SERVER_PORT), found free by binding it.
PORT_BLOCKS_START = 24000
PORT_BLOCK_SIZE = 200
PORT_BLOCKS_PER_WORKER = 10
SERVICE_PORTS = 10  # the first ports of a block; the rest are Ray workers' ports
_blocks_taken = itertools.count()


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class RayPorts:
    """Every port a one-node test cluster listens on, as `ray start` flags."""

    base: int

    @classmethod
    def next_free(cls) -> RayPorts:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
        first = int(worker) * PORT_BLOCKS_PER_WORKER if worker.isdigit() else 0
        for _ in range(PORT_BLOCKS_PER_WORKER):
            taken = next(_blocks_taken) % PORT_BLOCKS_PER_WORKER
            base = PORT_BLOCKS_START + (first + taken) * PORT_BLOCK_SIZE
            assert base + PORT_BLOCK_SIZE <= 32768, "more xdist workers than port blocks (four fit)"
            if all(_bindable(port) for port in range(base, base + SERVICE_PORTS)):
                return cls(base)
        raise AssertionError("no free block of ports for a test Ray cluster")

    @property
    def gcs(self) -> int:
        return self.base

    @property
    def client(self) -> int:
        return self.base + 1

    @property
    def autoscaler_metrics(self) -> int:
        return self.base + 8

    def flags(self) -> str:
        named = {"ray-client-server-port": self.client, "node-manager-port": self.base + 2,
                 "object-manager-port": self.base + 3, "runtime-env-agent-port": self.base + 4,
                 "dashboard-agent-grpc-port": self.base + 5, "dashboard-agent-listen-port": self.base + 6,
                 "metrics-export-port": self.base + 7}
        return " ".join(f"--{flag}={port}" for flag, port in named.items()) + (
            f" --min-worker-port={self.base + SERVICE_PORTS}"
            f" --max-worker-port={self.base + PORT_BLOCK_SIZE - 1}")


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
    ports: RayPorts

    def post_mortem(self) -> str:
        """What the head and Ray's logs said, for a failure message; empty while the head runs."""
        if self.head.poll() is None:
            return ""
        parts = [f"the test Ray cluster's head exited with status {self.head.returncode}"]
        logs = sorted(self.temp.glob("head.log")) + sorted(self.temp.glob("session_*/logs/*"))
        for log in logs:
            if log.is_file() and log.suffix in (".log", ".err", ".out") and log.stat().st_size:
                parts.append(f"--- {log.name}: {log.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

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


def start_documented_cluster(home: Path, ports: RayPorts | None = None) -> RayCluster:
    """A cluster as the docs start it, its token in ``home``/.ray (made there once, as the docs'
    lines do: a cluster started again with the same home keeps the token its clients have).
    Returned once its raylet says it started (its log file alone appears earlier)."""
    ports = ports or RayPorts.next_free()
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    lines = documented_head_lines()
    start = next(line for line in lines if " start --head" in line)
    assert "--port=6379" in start, start
    test_start = start.replace("--port=6379", f"--port={ports.gcs}") + (
        f" --block --num-cpus=2 --include-dashboard=false --object-store-memory={100 * 1024 * 1024}"
        f" --temp-dir={temp} {ports.flags()}")
    script = "set -e\n" + "\n".join(lines[:lines.index(start)]) + f"\nexec {test_start}\n"
    environment = {**documented_environment(lines), "HOME": str(home)}
    outer = {key: value for key, value in os.environ.items()
             if not key.startswith(("RAY_", "RECOND_"))}
    # Workers import the checkout under test. A first Ray Client server on a busy 2-core machine
    # may take over Ray's 30 s to answer (a timing knob, not a security one).
    # The head's metrics port is a fixed number (44217) unless this variable names another.
    env = {**outer, "HOME": str(home), "PYTHONPATH": str(REPO),
           "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "120",
           "AUTOSCALER_METRIC_PORT": str(ports.autoscaler_metrics)}
    head = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=(temp / "head.log").open("wb"), start_new_session=True)
    deadline = time.monotonic() + CLUSTER_START_SECONDS
    cluster = RayCluster(f"127.0.0.1:{ports.gcs}", f"ray://127.0.0.1:{ports.client}",
                         {**environment, "PYTHONPATH": str(REPO)}, head, temp, home, ports)
    while not _raylet_started(temp):
        if head.poll() is not None or time.monotonic() > deadline:
            if head.poll() is None:
                head.terminate()
                head.wait(30)
            message = cluster.post_mortem()
            stop_cluster(head, temp)
            raise AssertionError(message)
        time.sleep(0.2)
    return cluster


def _raylet_started(temp: Path) -> bool:
    for log in temp.glob("session_*/logs/raylet.out"):
        with log.open(errors="replace") as lines:
            if any(" started. Raylet consists of" in line for line in lines):
                return True
    return False


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
    try:
        cluster = start_documented_cluster(home)
    except AssertionError as failed:
        # The cluster is the tests' ground, not what they test: one that ends while starting
        # (its post-mortem is in the warning) is started once more, on a fresh block of ports.
        warnings.warn(f"test Ray cluster failed to start; starting another: {failed}", stacklevel=1)
        cluster = start_documented_cluster(home)
    try:
        yield cluster
    finally:
        stop_cluster(cluster.head, cluster.temp)
        shutil.rmtree(home, ignore_errors=True)


class RayInstallation(Installation):
    """An installation whose daemon gets the environment docs/ray.md gives it."""

    environment: dict[str, str] = {}

    cluster: RayCluster | None = None

    def start(self, *arguments: str, wrapper: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> subprocess.Popen:
        return super().start(*arguments, wrapper=wrapper, env={**self.environment, **(env or {})})

    def stderr(self) -> str:
        """The daemon's last lines and, when the cluster's head has ended, Ray's own account."""
        ended = self.cluster.post_mortem() if self.cluster else ""
        return super().stderr() + (f"\n{ended}" if ended else "")


@pytest.fixture
def on_ray(tmp_path: Path, tiny_model_dir: Path, shared_dir: Path, ray_cluster: RayCluster):
    """``on_ray(**settings)``: an installation whose daemon runs its jobs on the test cluster."""
    made: list[RayInstallation] = []

    def make(**settings) -> RayInstallation:
        setup = RayInstallation(tmp_path, tiny_model_dir, shared_dir / "examples", **{
            "executor": "ray", "ray_address": ray_cluster.address, "model_retry_seconds": 1, **settings})
        setup.environment = ray_cluster.environment
        setup.cluster = ray_cluster
        made.append(setup)
        return setup

    yield make
    for setup in made:
        setup.stop()
