"""The galleries over a real store of 10,000 jobs: /gallery pages of 50, newest first, with
thumbnails, facts and failures; and the daemon's static outbox/index.html, written atomically.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from helpers.web_server import LOCAL

from recond.config import Settings
from recond.outbox.gallery import STATIC_LIMIT, write_gallery
from recond.store import DONE, FAILED, QUEUED, Store
from recond.web.app import create_app

ROWS = 10_000
CARD = re.compile(r'<li class="card[^"]*" data-job="(\d+)"')


def state_of(job_id: int) -> str:
    return FAILED if job_id % 10 == 3 else QUEUED if job_id % 10 == 7 else DONE


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("gallery")
    settings = Settings(inbox=root / "inbox", outbox=root / "outbox", state_dir=root / "state")
    settings.outbox.mkdir(parents=True)
    store = Store(settings.db_path)
    now = time.time()
    rows = [{"id": job_id, "source": f"shelf/photo-{job_id}.jpg", "sha256": f"{job_id:064x}",
             "size": 1000, "state": state_of(job_id), "attempts": 1,
             "result_name": f"20260101-000000_photo-{job_id}",
             "output": str(settings.outbox / f"20260101-000000_photo-{job_id}"),
             "error": "photo-3.jpg is not an image format recond can read" if state_of(job_id) == FAILED else None,
             "queued_at": now - ROWS + job_id, "started_at": now - ROWS + job_id,
             "finished_at": now - ROWS + job_id + 12.4, "updated_at": now - ROWS + job_id}
            for job_id in range(1, ROWS + 1)]
    store.db["jobs"].insert_all(rows, batch_size=1000)
    for job_id in (ROWS, ROWS - 1):  # the two newest done jobs have real result folders
        folder = settings.outbox / f"20260101-000000_photo-{job_id}"
        folder.mkdir()
        Image.new("RGB", (32, 32), (200, 80, 40)).save(folder / "render_000.png")
        (folder / "job.json").write_text(json.dumps({"faces": 1234, "stage_seconds": {"load": 0.1}}))
    store.close()
    return settings


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=LOCAL) as client:
        yield client


def finished_ids() -> list[int]:
    return [job_id for job_id in range(ROWS, 0, -1) if state_of(job_id) in (DONE, FAILED)]


def test_gallery_pages_hold_50_finished_jobs_newest_first(client: TestClient) -> None:
    expected = finished_ids()
    pages = -(-len(expected) // 50)
    first = client.get("/gallery").text
    last = client.get("/gallery", params={"page": pages}).text
    assert [int(i) for i in CARD.findall(first)] == expected[:50]
    assert [int(i) for i in CARD.findall(last)] == expected[(pages - 1) * 50:]
    assert f"{len(expected):,} finished jobs" in first and f"page 1 of {pages}" in first
    assert 'rel="next" href="/gallery?page=2"' in first and 'rel="prev"' not in first
    assert 'rel="next"' not in last
    assert client.get("/gallery", params={"page": 0}).status_code == 422  # times: bench_web.py
    past_the_end = client.get("/gallery", params={"page": 999}, follow_redirects=False)
    assert past_the_end.status_code == 303 and past_the_end.headers["location"] == f"/gallery?page={pages}"


def test_a_card_shows_thumbnail_facts_and_viewer_link_or_the_failure(client: TestClient) -> None:
    page = client.get("/gallery").text
    newest = f"/results/20260101-000000_photo-{ROWS}/"
    assert f'<a href="{newest}"><img src="{newest}render_000.png"' in page
    card = page[page.index(f'data-job="{ROWS}"'):page.index(f'data-job="{ROWS - 1}"')]
    assert "shelf/photo-10000.jpg" in card and "1,234 faces" in card and "12 s" in card
    failed = page[page.index('data-job="9993"'):]
    assert 'class="card failed"' in page and "is not an image format" in failed.split("</li>")[0]
    assert client.get(f"{newest}render_000.png").headers["content-type"] == "image/png"


def test_static_gallery_is_rewritten_atomically_with_relative_links(settings: Settings) -> None:
    store = Store(settings.db_path)
    try:
        path = write_gallery(settings.outbox, store)
    finally:
        store.close()
    assert path == settings.outbox / "index.html"
    page = path.read_text()
    assert [int(i) for i in CARD.findall(page)] == finished_ids()[:STATIC_LIMIT]
    newest = f"20260101-000000_photo-{ROWS}"
    assert f'<a href="{newest}/index.html"><img src="{newest}/render_000.png"' in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from anywhere
    assert [p.name for p in settings.outbox.iterdir() if p.is_file()] == ["index.html"]  # no temp left


def test_static_gallery_problems_never_fail_the_caller(tmp_path: Path) -> None:
    store = Store(tmp_path / "recond.db")
    try:
        assert write_gallery(tmp_path / "no-such-outbox", store) is None
    finally:
        store.close()


def test_a_web_upload_is_shown_by_its_own_name() -> None:
    from recond.names import shown_name, upload_source

    assert shown_name(upload_source("0123456789abcdef", "chair photo.png")) == "chair photo.png"
    assert shown_name("web/not-an-upload.png") == "web/not-an-upload.png"
    assert shown_name("kitchen/mug.jpg") == "kitchen/mug.jpg"


def test_a_failed_uploads_error_names_the_picture_without_its_upload_id() -> None:
    from recond.names import upload_source, without_upload_id
    from recond.outbox.gallery import Entry, render_page

    source = upload_source("0123456789abcdef", "notes.png")
    error = "0123456789abcdef-notes.png is not an image format recond can read"
    assert without_upload_id(error, source) == "notes.png is not an image format recond can read"
    assert without_upload_id(f"{source} vanished", source) == "notes.png vanished"
    page = render_page([Entry(1, None, source, None, None, None, False, error)], "/results/", "", "Results")
    assert "0123456789abcdef" not in page and "notes.png is not an image format" in page
