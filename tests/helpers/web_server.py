"""A real `recond-web` process for the web tests: started on a free loopback port, waited on
until /healthz answers, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from helpers.paths import REPO
LOCAL = "http://127.0.0.1"  # a base URL for TestClient whose Host recond-web answers (not "testserver")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebServer:
    """`python -m recond.web.server --config CONFIG` (what the recond-web script runs)."""

    def __init__(self, config: Path, log: Path, token: str | None = None) -> None:
        self.config, self.log_path, self.token = config, log, token
        self.port = int(dict(line.split(" = ", 1) for line in config.read_text().splitlines()
                             if " = " in line).get("web_port", "8765"))
        self.url = f"http://127.0.0.1:{self.port}"
        env = {key: value for key, value in os.environ.items() if not key.startswith("RECOND_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "recond.web.server", "--config", str(config)], cwd=REPO, env=env,
            stdout=subprocess.DEVNULL, stderr=log.open("ab"))
        self._wait_until_up()

    def _wait_until_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"recond-web exited:\n{self.stderr()}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"recond-web did not answer within {timeout} s\n{self.stderr()}")

    def client(self, **options: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **options)

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith("VmRSS:"))) / 1024

    def mapped_files(self) -> str:
        return Path(f"/proc/{self.process.pid}/maps").read_text()

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
