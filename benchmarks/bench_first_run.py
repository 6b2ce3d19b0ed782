"""First-run figures: how fast an offline machine hears that the weights are missing, how long
rembg's first-start download takes to give up offline, how long `reconctl doctor` takes
offline, and how long `recond --once` takes with nothing waiting.

"Offline" is a local socket that accepts and never answers (HF_ENDPOINT, and HTTPS_PROXY for
rembg's GitHub download, point at it): the slowest kind of unreachable server.
Run: python benchmarks/bench_first_run.py
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_config(root: Path) -> Path:
    config = root / "recond.toml"
    (root / "inbox").mkdir(parents=True)
    config.write_text(f'inbox = "{root / "inbox"}"\noutbox = "{root / "outbox"}"\n'
                      f'state_dir = "{root / "state"}"\nmodel = "stabilityai/TripoSR"\ndevice = "cpu"\n')
    return config


def offline_message_seconds(root: Path, env: dict[str, str]) -> tuple[float, float]:
    """(seconds from process start, seconds from 'recond started') to the missing-weights line."""
    config = write_config(root)
    started = time.time()
    daemon = subprocess.Popen([sys.executable, "-m", "recond.daemon", "--config", str(config)],
                              cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    try:
        while True:
            events = {}
            log = root / "state" / "recond.log"
            if log.is_file():
                for line in log.read_text().splitlines():
                    event = json.loads(line)
                    events.setdefault(event["event"], event)
            if "model not loaded; jobs stay queued" in events:
                break
            time.sleep(0.02)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)

    def at(name: str) -> float:
        return datetime.fromisoformat(events[name]["timestamp"].replace("Z", "+00:00")).timestamp()

    missing = at("model not loaded; jobs stay queued")
    return missing - started, missing - at("recond started")


# rembg's model missing and its server black-holed: the check before the download gives up.
REMBG_OFFLINE = ("import time; from recond.config import load_settings; "
                 "from recond.pipeline.background import download_rembg_model; "
                 "settings = load_settings(model='-'); started = time.monotonic(); "
                 "download_rembg_model(settings); print(time.monotonic() - started)")


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=600)
    return time.monotonic() - started


def main() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        env = {key: value for key, value in os.environ.items() if not key.startswith(("RECOND_", "HF_"))}
        env.update(HF_HOME=str(root / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{listener.getsockname()[1]}")
        print(f"load average before: {os.getloadavg()}")
        from_process, from_started = offline_message_seconds(root / "daemon", env)
        print(f"offline weights line: {from_process:.2f} s after the process started, "
              f"{from_started:.2f} s after 'recond started'")
        rembg = subprocess.run([sys.executable, "-c", REMBG_OFFLINE], cwd=REPO, capture_output=True,
                               text=True, timeout=600, env={**env, "U2NET_HOME": str(root / "u2net"),
                                                            "HTTPS_PROXY": env["HF_ENDPOINT"]})
        print(f"rembg download offline, given up after: {float(rembg.stdout.split()[-1]):.2f} s")
        config = write_config(root / "doctor")
        doctor = timed([sys.executable, "-m", "recond.cli", "doctor", "--config", str(config)], env)
        print(f"reconctl doctor offline: {doctor:.2f} s")
        once = timed([sys.executable, "-m", "recond.daemon", "--config", str(config), "--once"], env)
        print(f"recond --once, nothing waiting: {once:.2f} s")
        print(f"load average after: {os.getloadavg()}")
    listener.close()


if __name__ == "__main__":
    main()
