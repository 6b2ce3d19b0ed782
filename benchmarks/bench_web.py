"""recond-web figures: upload-to-job latency, the web process's memory, and page times with a
10,000-job store.

Starts the real daemon (without weights, so jobs stay queued and only intake is measured) and
the real recond-web on temporary folders, uploads pictures concurrently, then adds finished jobs
to the store and times the gallery, the job list and a metrics scrape.

    .venv/bin/python benchmarks/bench_web.py [--uploads 100] [--rows 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def picture(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (index % 256, index // 256 % 256, 99)).save(buffer, format="PNG")
    return buffer.getvalue()


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


async def upload_all(url: str, count: int) -> dict[str, float]:
    """Source -> time of the 202, for ``count`` pictures sent at once (429s retried)."""
    accepted: dict[str, float] = {}

    async def one(client: httpx.AsyncClient, index: int) -> None:
        while True:
            answer = await client.post("/api/jobs", files={"image": (f"p{index}.png", picture(index))})
            if answer.status_code != 429:
                break
            await asyncio.sleep(0.1)
        answer.raise_for_status()
        accepted[answer.json()["uploads"][0]["source"]] = time.time()

    async with httpx.AsyncClient(base_url=url, timeout=120,
                                 limits=httpx.Limits(max_connections=count)) as client:
        await asyncio.gather(*(one(client, index) for index in range(count)))
    return accepted


def add_finished_rows(db: Path, rows: int) -> None:
    now = time.time()
    with sqlite3.connect(db) as connection:
        connection.executemany(
            "insert into jobs (source, sha256, size, state, attempts, result_name, queued_at, "
            "started_at, finished_at, updated_at, warnings) values (?, ?, 1, ?, 1, ?, ?, ?, ?, ?, '[]')",
            [(f"bench/{i}.jpg", f"bench{i:058x}", "done" if i % 10 else "failed", f"bench-{i}",
              now, now, now + 10, now) for i in range(rows)])


def timed(client: httpx.Client, path: str, repeats: int = 20) -> float:
    client.get(path).raise_for_status()  # warm
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        port = free_port()
        config = root / "recond.toml"
        settings = {"inbox": str(root / "inbox"), "outbox": str(root / "outbox"),
                    "state_dir": str(root / "state"), "model": str(root / "no-weights"),
                    "settle_seconds": 0.5, "web_port": port}
        config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
        env = {key: value for key, value in os.environ.items() if not key.startswith("RECOND_")}
        daemon = subprocess.Popen([sys.executable, "-m", "recond.daemon", "--config", str(config)],
                                  cwd=REPO, env=env, stderr=subprocess.DEVNULL)
        web = subprocess.Popen([sys.executable, "-m", "recond.web.server", "--config", str(config)],
                               cwd=REPO, env=env, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    httpx.get(f"{url}/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            rss_idle = rss_mb(web.pid)
            accepted = asyncio.run(upload_all(url, args.uploads))
            db = root / "state" / "recond.db"
            while True:
                with sqlite3.connect(db) as connection:
                    jobs = connection.execute("select source, queued_at from jobs").fetchall()
                if len(jobs) >= args.uploads:
                    break
                time.sleep(0.05)
            latencies = sorted(queued_at - accepted[source] for source, queued_at in jobs)
            rss_after_uploads = rss_mb(web.pid)
            add_finished_rows(db, args.rows)
            with httpx.Client(base_url=url, timeout=60) as client:
                pages = -(-int(args.rows) // 50)
                figures = {path: timed(client, path) for path in (
                    "/gallery", f"/gallery?page={pages}", "/api/jobs?limit=50", "/metrics",
                    "/api/status")}
            print(f"load average {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
            print(f"{args.uploads} concurrent uploads: upload-to-job latency median "
                  f"{statistics.median(latencies):.2f} s, p95 {latencies[int(len(latencies) * 0.95) - 1]:.2f} s, "
                  f"max {latencies[-1]:.2f} s (settle_seconds 0.5)")
            print(f"recond-web RSS: {rss_idle:.0f} MB idle, {rss_after_uploads:.0f} MB after the uploads, "
                  f"{rss_mb(web.pid):.0f} MB after the page timings")
            for path, milliseconds in figures.items():
                print(f"GET {path:<24} median {milliseconds:6.1f} ms with {args.rows:,} finished jobs")
        finally:
            for process in (web, daemon):
                process.send_signal(signal.SIGTERM)
                process.wait(30)


if __name__ == "__main__":
    main()
