"""Asking a Ray cluster whether it answers, from a child process that can be killed (issue 26).

``ray.init`` joins a cluster inside Ray's C++ code and has no timeout of its own: with nothing
listening at the address it waited over 100 s here and ignored SIGTERM (measured with Ray 2.60 on
this machine), and a thread stuck there can be neither stopped nor joined. So the daemon first
asks from a child process, which it kills (the whole process group, SIGKILL) when the answer
does not come within ``ray_connect_seconds`` or the daemon stops; only a cluster that answered is
joined from the daemon itself.

Run as ``python -m recond.executors.ray_probe ADDRESS``: it joins, prints one JSON line of facts
(the nodes' addresses, whether token authentication is on) and leaves.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO

POLL_SECONDS = 0.1  # how often the daemon looks at the child (and at its stop event)
KILLED_WAIT_SECONDS = 5.0  # after SIGKILL, for the kernel to reap the child
REASON_LINES = 3  # of the child's stderr, in the reason a connect failed


class ProbeFailed(RuntimeError):
    """The cluster did not answer (or refused); the message says why, as far as Ray told."""


@dataclass(frozen=True)
class ClusterFacts:
    """What the child learnt of the cluster it joined."""

    nodes: list[str]  # the nodes' addresses as Ray registered them
    token_auth: bool  # Ray's token authentication was on for this connection

    @property
    def off_loopback(self) -> list[str]:
        """Node addresses others may reach: anything but 127.0.0.0/8 and ::1."""
        return [node for node in self.nodes if not _is_loopback(node)]


def ask(address: str, timeout_s: float, stop: threading.Event) -> ClusterFacts:
    """The facts of the cluster at ``address``; ProbeFailed when it does not answer within
    ``timeout_s`` (or refuses). Returns early, killing the child, once ``stop`` is set."""
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen([sys.executable, "-m", __name__, address], stdout=subprocess.PIPE,
                                 stderr=errors, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while child.poll() is None:
            if stop.is_set() or time.monotonic() >= deadline:
                _kill(child)
                if stop.is_set():
                    raise ProbeFailed("stopped while connecting")
                raise ProbeFailed(f"no answer within ray_connect_seconds = {timeout_s:g} s"
                                  + _last_lines(errors))
            time.sleep(POLL_SECONDS)
        assert child.stdout is not None, "stdout is a pipe"
        output = child.stdout.read().decode(errors="replace").strip().splitlines()
        child.stdout.close()
        if child.returncode != 0 or not output:
            raise ProbeFailed(f"Ray refused or failed (exit {child.returncode})" + _last_lines(errors))
        facts = json.loads(output[-1])
        return ClusterFacts(list(facts["nodes"]), bool(facts["token_auth"]))


def open_to_others(facts: ClusterFacts | None) -> str | None:
    """The warning for a cluster anyone on the network may run code on: no token authentication
    and a node bound off loopback (issue 26; docs/ray.md says how to close it)."""
    if facts is None or facts.token_auth or not facts.off_loopback:
        return None
    return (f"the Ray cluster has no token authentication and listens on {', '.join(facts.off_loopback)}: "
            "anyone who can reach it can run code as its user; turn on token auth or keep it on "
            "loopback (docs/ray.md, \"Safe set-up\")")


def _kill(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the child's group: Ray's C++ code ignored SIGTERM while it connected."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        child.wait(KILLED_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    if child.stdout is not None:
        child.stdout.close()


def _last_lines(errors: IO[bytes]) -> str:
    """The child's last stderr lines that say something (Ray writes its reasons there)."""
    errors.seek(0)
    lines = [" ".join(line.split()) for line in errors.read().decode(errors="replace").splitlines()]
    said = [line for line in lines if line and "Traceback" not in line and not line.startswith("File ")]
    return f": {' / '.join(said[-REASON_LINES:])[:600]}" if said else ""


def _is_loopback(node: str) -> bool:
    try:
        return ipaddress.ip_address(node).is_loopback
    except ValueError:
        return node == "localhost"


def main(address: str) -> None:
    import logging

    import ray
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    nodes = sorted({node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")})
    print(json.dumps({"nodes": nodes, "token_auth": is_token_auth_enabled()}), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
