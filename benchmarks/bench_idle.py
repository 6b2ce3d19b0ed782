"""Idle CPU of the recond daemon: native events and polling, with 1,000 files waiting.

The realistic idle case with a full inbox is "the weights are missing": every drop is recorded
as queued and nothing is processed. The script starts the real daemon on temporary folders with
a model path that does not exist, waits until all files are queued, then reads the process's
CPU time from /proc/<pid>/stat over a window.

    .venv/bin/python benchmarks/bench_idle.py [--files 1000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of all the process's threads, from /proc/<pid>/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def queued(db: Path) -> int:
    try:
        with sqlite3.connect(db) as connection:
            return connection.execute("select count(*) from jobs where state = 'queued'").fetchone()[0]
    except sqlite3.Error:
        return 0


def measure(mode: str, files: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        inbox = root / "inbox"
        inbox.mkdir()
        for index in range(files):
            (inbox / f"photo_{index:04d}.jpg").write_bytes(f"picture {index}".encode() * 100)
        env = {**os.environ, "RECOND_INBOX": str(inbox), "RECOND_OUTBOX": str(root / "outbox"),
               "RECOND_STATE_DIR": str(root / "state"), "RECOND_MODEL": str(root / "no-weights"),
               "RECOND_POLLING": str(mode == "polling").lower(), "RECOND_SETTLE_SECONDS": "1",
               "RECOND_LOG_LEVEL": "warning"}
        started = time.monotonic()
        daemon = subprocess.Popen([sys.executable, "-m", "recond.daemon"], env=env,
                                  stderr=subprocess.DEVNULL)
        try:
            while queued(root / "state" / "recond.db") < files:
                if time.monotonic() - started > 300:
                    raise RuntimeError("files were not all queued within 300 s")
                time.sleep(0.5)
            intake_s = time.monotonic() - started
            time.sleep(3)  # let the start-up work (model load attempt, scan) finish
            before, clock = cpu_seconds(daemon.pid), time.monotonic()
            time.sleep(seconds)
            used, wall = cpu_seconds(daemon.pid) - before, time.monotonic() - clock
        finally:
            daemon.terminate()
            daemon.wait(30)
        return {"intake_s": intake_s, "cpu_s": used, "wall_s": wall, "percent": 100 * used / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; {args.files} files queued, model missing, "
          f"poll_interval 2 s (default), rescan_seconds 300 s (default)")
    for mode in ("native", "polling"):
        figures = measure(mode, args.files, args.seconds)
        print(f"{mode:>8}: all {args.files} queued after {figures['intake_s']:.1f} s; idle CPU "
              f"{figures['cpu_s']:.2f} s over {figures['wall_s']:.1f} s = {figures['percent']:.2f} % of one core")


if __name__ == "__main__":
    main()
