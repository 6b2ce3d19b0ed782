"""Load: 100 different pictures uploaded at once through a real `recond-web` each become exactly
one job of a real `recond` daemon. The daemon runs without weights, so the jobs stay queued and
the test measures intake, not reconstruction. Prints upload-to-job latency and the web's RSS.
"""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import statistics
import time
from pathlib import Path

import httpx
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from helpers.installation import Installation
from helpers.web_server import WebServer, free_port

UPLOADS = 100


def distinct_picture(index: int) -> bytes:
    image = Image.new("RGB", (48, 48), (index * 37 % 256, index * 11 % 256, 200))
    image.putpixel((index % 48, index // 48), (0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def upload_all(url: str) -> tuple[list[dict], dict[str, float], int]:
    """POST every picture concurrently, retrying on 429 as the answer asks; returns each upload,
    when it was accepted, and how many 429s were met."""
    accepted: dict[str, float] = {}
    retries = 0

    async def one(client: httpx.AsyncClient, index: int) -> dict:
        nonlocal retries
        while True:
            answer = await client.post("/api/jobs", files={
                "image": (f"picture-{index:03d}.png", distinct_picture(index), "image/png")})
            if answer.status_code != 429:
                break
            retries += 1
            await asyncio.sleep(float(answer.headers["retry-after"]) / 10)
        assert answer.status_code == 202, answer.text
        upload = answer.json()["uploads"][0]
        accepted[upload["source"]] = time.time()
        return upload

    limits = httpx.Limits(max_connections=UPLOADS)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        uploads = await asyncio.gather(*(one(client, index) for index in range(UPLOADS)))
    return uploads, accepted, retries


def jobs_in_store(db: Path) -> list[tuple[str, str, float]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return connection.execute("select source, state, queued_at from jobs").fetchall()


def test_100_concurrent_uploads_become_exactly_100_jobs(tmp_path: Path, shared_dir: Path) -> None:
    installation = Installation(tmp_path, tmp_path / "no-weights-here", shared_dir / "examples",
                                web_port=free_port())
    installation.start()
    web = WebServer(installation.config, tmp_path / "web.stderr")
    try:
        installation.wait(lambda status: status["daemon"]["model"] == "missing")
        rss_idle = web.rss_mb()
        uploads, accepted, retries = asyncio.run(upload_all(web.url))
        sources = {upload["source"] for upload in uploads}
        assert len(sources) == UPLOADS and len({u["upload_id"] for u in uploads}) == UPLOADS

        deadline = time.monotonic() + 60
        while len(jobs := jobs_in_store(installation.state / "recond.db")) < UPLOADS:
            assert time.monotonic() < deadline, f"only {len(jobs)} jobs after 60 s"
            time.sleep(0.05)
        time.sleep(1.0)  # a second chance for any double intake to show up
        jobs = jobs_in_store(installation.state / "recond.db")
        assert sorted(source for source, _, _ in jobs) == sorted(sources)  # one job each, no more
        assert {state for _, state, _ in jobs} == {"queued"}
        in_web_folder = sorted(path.name for path in (installation.inbox / "web").iterdir())
        assert [f"web/{name}" for name in in_web_folder] == sorted(sources)  # no temporary files

        with web.client() as client:
            followed = client.get(uploads[0]["status_url"]).json()
            families = {family.name: family for family in
                        text_string_to_metric_families(client.get("/metrics").text)}
        assert followed["state"] == "queued" and followed["job"]["source"] == uploads[0]["source"]
        assert families["recond_queue_length"].samples[0].value == UPLOADS
        assert families["recond_model_loaded"].samples[0].value == 0
        assert families["recond_daemon_up"].samples[0].value == 1

        latencies = sorted(queued_at - accepted[source] for source, _, queued_at in jobs)
        print(f"\n{UPLOADS} concurrent uploads ({retries} answers 429, retried): upload-to-job latency "
              f"median {statistics.median(latencies):.2f} s, max {latencies[-1]:.2f} s "
              f"(settle_seconds 0.5); recond-web RSS {rss_idle:.0f} MB idle, {web.rss_mb():.0f} MB after; "
              f"load average {os.getloadavg()[0]:.2f}")
    finally:
        web.stop()
        installation.stop()
