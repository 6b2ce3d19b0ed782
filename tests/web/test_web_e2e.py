"""End to end: a real `recond` daemon with the tiny checkpoint and a real `recond-web` beside it.

Pictures go in through the upload page in headless Chromium (Playwright driving /usr/bin/chromium)
and through the API with a real HTTP client; progress arrives as server-sent events from the
store; results, the gallery and the metrics are read back over HTTP.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from recond.pipeline.progress import STAGE_WORDS, STAGES
from helpers.browser import CHROMIUM, WEBGL_FLAGS
from helpers.installation import Installation
from helpers.web_server import WebServer, free_port

BACKGROUND = np.array([236, 239, 243])  # the viewer's clear colour (viewer_assets/viewer.js)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path,
         shared_dir: Path) -> Iterator[tuple[Installation, WebServer]]:
    root = tmp_path_factory.mktemp("web_e2e")
    installation = Installation(root, tiny_model_dir, shared_dir / "examples", web_port=free_port())
    installation.start()
    web = WebServer(installation.config, root / "web.stderr")
    yield installation, web
    web.stop()
    installation.stop()


def sse_events(client: httpx.Client, url: str, until: Any = None) -> Iterator[tuple[str, dict]]:
    """(event, data) pairs of a server-sent event stream, parsed line by line."""
    with client.stream("GET", url, timeout=httpx.Timeout(10, read=120)) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                yield event, json.loads(line.split(":", 1)[1])


def follow_upload(web: WebServer, upload: dict) -> list[dict]:
    with web.client() as client:
        return [data for event, data in sse_events(client, upload["events_url"]) if event == "job"]


def post_picture(web: WebServer, path: Path) -> dict:
    with web.client() as client:
        answer = client.post("/api/jobs", files={"image": (path.name, path.read_bytes(), "image/png")})
    assert answer.status_code == 202, answer.text
    return answer.json()["uploads"][0]


def store_counts(installation: Installation) -> dict[str, int]:
    return installation.report()["counts"]


def test_api_upload_followed_over_sse_to_done(site: tuple[Installation, WebServer]) -> None:
    installation, web = site
    everything: list[dict] = []

    def listen() -> None:
        try:
            everything.extend(data for _, data in sse_events(web.client(), "/api/events"))
        except httpx.TransportError:
            pass  # the stream never ends by itself: it is cut when the web process stops

    threading.Thread(target=listen, daemon=True).start()
    time.sleep(0.5)  # subscribed before the upload

    upload = post_picture(web, installation.examples / "robot.png")
    events = follow_upload(web, upload)
    job = events[-1]
    assert job["state"] == "done" and job["source"] == upload["source"]
    assert job["source"] == f"web/{upload['upload_id']}-robot.png"
    running = [event for event in events if event["state"] == "running"]
    progress = [event["progress"] for event in running]
    assert progress == sorted(progress)  # the stream samples the store: fewer events, never backwards
    assert any(event["stage"] in STAGES and 0 < event["progress"] < 1 for event in running), running
    assert job["result_url"] == f"/results/{job['result_name']}/"

    with web.client() as client:
        shown = client.get(f"/api/jobs/{job['id']}").json()
        listed = client.get("/api/jobs", params={"state": "done"}).json()
        page = client.get(job["result_url"])
        viewer = client.get(f"{job['result_url']}index.html")
        glb = client.get(f"{job['result_url']}mesh.glb")
        replay = [data for _, data in sse_events(client, f"/api/jobs/{job['id']}/events")]
    reconctl = json.loads(installation.reconctl("show", str(job["id"]), "--json").stdout)
    assert {key: shown[key] for key in reconctl} == reconctl
    assert job["id"] in [item["id"] for item in listed]
    assert page.status_code == 200 and f'src="{job["result_url"]}index.html"' in page.text
    assert f'href="{job["result_url"]}mesh.glb"' in page.text and "<title>robot.png · recond</title>" in page.text
    assert 'id="mesh-data"' in viewer.text and 'href="mesh.glb"' in viewer.text
    assert "<title>robot.png · recond</title>" in viewer.text  # the daemon's viewer: no upload id
    assert glb.content == (installation.outbox / job["result_name"] / "mesh.glb").read_bytes()
    assert [event["state"] for event in replay] == ["done"]  # a finished job: one event, then the end

    # The same bytes again: a duplicate that points at the first result.
    again = follow_upload(web, post_picture(web, installation.examples / "robot.png"))[-1]
    assert again["state"] == "duplicate" and again["result_url"] == job["result_url"]

    deadline = time.monotonic() + 10
    while not any(item["id"] == job["id"] and item["state"] == "done" for item in everything):
        assert time.monotonic() < deadline, "the all-jobs stream never showed the job done"
        time.sleep(0.1)
    assert any(item["id"] == job["id"] and item["state"] == "running" for item in everything)
    assert "torch" not in web.mapped_files()  # the web process never loaded the model's stack


def curl(*arguments: str, cwd: Path) -> str:
    """The real curl binary, as the seed app's README uses it."""
    result = subprocess.run(["curl", "--silent", "--show-error", "--fail", *arguments], cwd=cwd,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_seeds_curl_example_works_unchanged(site: tuple[Installation, WebServer],
                                                tmp_path: Path) -> None:
    """The app recond replaces documents `curl -X POST http://localhost:5000/ -F "image=@chair.jpg"`,
    then /progress/{id}, /result/{folder} and /output/{folder}/{file}: each works here."""
    installation, web = site
    Image.open(installation.examples / "chair.png").convert("RGB").save(tmp_path / "chair.jpg")
    base = f"http://localhost:{web.port}"
    upload = json.loads(curl("-X", "POST", f"{base}/", "-F", "image=@chair.jpg", cwd=tmp_path))["uploads"][0]
    assert upload["name"] == "chair.jpg"
    stream = curl("--no-buffer", f"{base}/progress/{upload['upload_id']}", cwd=tmp_path)  # ends with the job
    jobs = [json.loads(line[5:]) for line in stream.splitlines() if line.startswith("data:")
            and '"id"' in line]
    assert jobs[-1]["state"] == "done" and jobs[-1]["name"] == "chair.jpg", stream
    folder = jobs[-1]["result_name"]
    by_job = curl("--no-buffer", f"{base}/progress/{jobs[-1]['id']}", cwd=tmp_path)
    assert '"state": "done"' in by_job
    page = curl(f"{base}/result/{folder}", cwd=tmp_path)
    assert "<title>chair.jpg · recond</title>" in page and f"/results/{folder}/index.html" in page
    curl("--output", "mesh.glb", f"{base}/output/{folder}/mesh.glb", cwd=tmp_path)
    assert (tmp_path / "mesh.glb").read_bytes() == (installation.outbox / folder / "mesh.glb").read_bytes()
    assert "chair.jpg" in curl(f"{base}/gallery", cwd=tmp_path)


def test_status_and_metrics_match_the_store(site: tuple[Installation, WebServer]) -> None:
    installation, web = site
    # A job of its own: the module's other tests may run after this one, or on another worker
    # with a site of their own (seen under `-n 3`: nothing done after 90 s of waiting).
    installation.drop_like_a_share("horse.png")
    installation.wait(lambda status: any(job["source"] == "horse.png" and job["state"] == "done"
                                         for job in status["recent"])
                      and status["counts"]["running"] == 0 and status["counts"]["queued"] == 0)
    with web.client() as client:
        status = client.get("/api/status").json()
        deadline = time.monotonic() + 10
        while True:  # the stage histogram follows the store within a watcher tick
            families = {family.name: family for family in
                        text_string_to_metric_families(client.get("/metrics").text)}
            loads = [s.value for s in families["recond_stage_seconds"].samples
                     if s.name == "recond_stage_seconds_count" and s.labels["stage"] == "load"]
            if loads == [store_counts(installation)["done"]] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    reconctl = installation.status()
    for changing in ("uptime_s", "heartbeat_age_s"):
        status["daemon"].pop(changing), reconctl["daemon"].pop(changing)
    assert status == reconctl
    counts = reconctl["counts"]
    jobs = {s.labels["state"]: s.value for s in families["recond_jobs"].samples}
    assert jobs == counts
    assert families["recond_queue_length"].samples[0].value == counts["queued"]
    assert families["recond_daemon_up"].samples[0].value == 1
    assert families["recond_model_loaded"].samples[0].value == 1
    assert loads == [counts["done"]]
    stages = {s.labels["stage"] for s in families["recond_stage_seconds"].samples}
    assert {"load", "reconstruct", "texture", "render"} <= stages


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_upload_page_shows_live_progress_then_result_and_gallery(
        site: tuple[Installation, WebServer], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    installation, web = site
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=WEBGL_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 960, "height": 640})
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            page.set_viewport_size({"width": 390, "height": 800})  # a phone: nothing wider than it
            page.goto(f"{web.url}/")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.set_viewport_size({"width": 960, "height": 640})
            page.evaluate("""() => { window.seen = [];
                new MutationObserver(() => { for (const row of document.querySelectorAll('#uploads li'))
                  window.seen.push([row.querySelector('.name').textContent, row.dataset.state,
                                    row.querySelector('progress').value, row.querySelector('.status').textContent]); })
                .observe(document.getElementById('uploads'),
                         {subtree: true, childList: true, attributes: true, characterData: true}); }""")
            not_a_picture = tmp_path / "notes.png"
            not_a_picture.write_text("shopping list, not a photo\n")
            page.set_input_files("#pick", [str(installation.examples / "chair.png"),
                                           str(installation.examples / "flamingo.png"), str(not_a_picture)])
            page.wait_for_function("""() => { const states = [...document.querySelectorAll('#uploads li')]
                .map(row => row.dataset.state); return states.length === 3 &&
                states.filter(state => state === 'done').length === 2 && states.includes('refused'); }""",
                                   timeout=120_000)
            seen = page.evaluate("window.seen")
            chair = [(state, percent, text) for name, state, percent, text in seen if name == "chair.png"]
            running = [(percent, text) for state, percent, text in chair if state == "running"]
            assert any(0 < percent < 100 and re.search(r"\d+%", text) for percent, text in running), chair
            assert any("left" in text for _, text in running), chair  # an ETA was shown ...
            assert not any(re.search(r"\b0 s left", text) for _, text in running), chair  # ... never "0 s"
            assert {text.split(" · ")[0] for _, text in running} <= {"starting", *STAGE_WORDS.values()}
            shown = [percent for percent, _ in running]
            assert shown == sorted(shown)  # the bar never goes back
            assert chair[-1][0] == "done" and chair[-1][1] == 100
            refused = page.locator("#uploads li[data-state=refused]")
            assert "notes.png is not an image format" in refused.inner_text()  # the server's reason
            assert not list(installation.inbox.rglob("*notes*"))

            page.reload()  # the uploads are still listed, finished, with their links
            page.wait_for_function("""() => [...document.querySelectorAll('#uploads li')]
                .filter(row => row.dataset.state === 'done').length === 2""", timeout=20_000)
            assert page.locator("#uploads li[data-state=done] .name").all_inner_texts() == [
                "flamingo.png", "chair.png"] or page.locator(
                "#uploads li[data-state=done] .name").all_inner_texts() == ["chair.png", "flamingo.png"]

            # The click starts a navigation and returns before it ends: reading the title at once
            # once gave the blank page's '' (stop 33's full run), so the title is awaited.
            with page.expect_navigation():
                page.click("#uploads li[data-state=done]:has-text('chair.png') a")
            expect(page).to_have_title("chair.png · recond")  # no upload id in the title
            viewer = page.wait_for_selector("iframe.viewer").content_frame()
            assert viewer is not None
            viewer.wait_for_function("document.documentElement.dataset.viewer === 'ready'", timeout=60_000)
            shot = np.asarray(Image.open(io.BytesIO(page.locator("iframe.viewer").screenshot()))
                              .convert("RGB"))[:, 300:].astype(int)
            assert (np.abs(shot - BACKGROUND).max(-1) > 30).mean() > 0.01  # the model is drawn
            page.wait_for_function("""() => { const img = document.querySelector('.photo img');
                return img.complete && img.naturalWidth > 0; }""")  # the original photo beside it
            assert page.locator(".photo img").get_attribute("src").endswith("/source.png")
            result_path = page.url.removeprefix(web.url)
            page.go_back()  # Back: the upload page, its list intact
            page.wait_for_selector("#uploads li[data-state=done]:has-text('chair.png') a")
            page.goto(f"{web.url}{result_path}")

            page.goto(f"{web.url}/gallery")
            card = page.locator(f'.gallery li:has(a[href="{result_path}"])')
            assert "chair.png" in card.inner_text() and "faces" in card.inner_text()
            page.wait_for_function(f"""() => {{ const img = document.querySelector(
                '.gallery a[href="{result_path}"] img'); return img && img.complete && img.naturalWidth > 0; }}""")
            assert all(url.startswith(web.url) for url in requested), requested  # no CDN, no internet
            page.set_viewport_size({"width": 390, "height": 800})
            assert page.evaluate("document.documentElement.scrollWidth") <= 390

            # The daemon's own gallery works from the share with no server at all.
            page.goto((installation.outbox / "index.html").as_uri())
            name = result_path.strip("/").split("/")[-1]
            page.wait_for_function(f"""() => {{ const img = document.querySelector(
                'img[src="{name}/render_000.png"]'); return img && img.complete && img.naturalWidth > 0; }}""")
            assert page.locator(f'a[href="{name}/index.html"]').count() == 2
        finally:
            browser.close()
