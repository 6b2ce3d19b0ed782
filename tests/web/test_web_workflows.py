"""recond-web and presets (issue 25): in headless Chromium the upload page offers the presets,
an upload made with one is made with it and its result page says so, and the result page's
redo form queues the picture again. Also the API: a preset field, an unknown one refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.browser import CHROMIUM, WEBGL_FLAGS
from helpers.installation import Installation
from helpers.web_server import WebServer, free_port

PRESETS = "\n[presets.quick]\nrender_views = 2\n\n[presets.print]\ntarget_faces = 0\n"


@pytest.fixture
def site(tmp_path: Path, tiny_model_dir: Path, shared_dir: Path) -> Iterator[tuple[Installation, WebServer]]:
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples", web_port=free_port())
    installation.config.write_text(installation.config.read_text() + PRESETS)
    installation.start()
    web = WebServer(installation.config, tmp_path / "web.stderr")
    yield installation, web
    web.stop()
    installation.stop()


def test_upload_api_refuses_an_unknown_preset_and_keeps_nothing(site) -> None:
    installation, web = site
    picture = installation.examples / "chair.png"
    with web.client() as client:
        answer = client.post("/api/jobs", data={"preset": "nope"},
                             files={"image": (picture.name, picture.read_bytes(), "image/png")})
    assert answer.status_code == 400 and "no preset 'nope'" in answer.text
    assert not [path for path in installation.inbox.rglob("*chair*")]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_choose_a_preset_upload_and_the_result_says_its_preset_then_redo(site) -> None:
    from playwright.sync_api import sync_playwright

    installation, web = site
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=WEBGL_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 960, "height": 640})
            page.goto(f"{web.url}/")
            assert page.locator("#upload-preset option").all_inner_texts() == ["defaults", "print", "quick"]
            page.select_option("#upload-preset", "quick")
            page.set_input_files("#pick", [str(installation.examples / "chair.png")])
            page.wait_for_selector("#uploads li[data-state=done] a", timeout=180_000)
            page.click("#uploads li[data-state=done]:has-text('chair.png') a")
            assert page.title() == "chair.png · recond"  # the upload id is not shown
            assert page.locator("#preset").inner_text() == "preset: quick"
            (first,) = installation.result_folders()
            assert json.loads((first / "job.json").read_text())["preset"] == "quick"
            assert len(list(first.glob("render_*.png"))) == 2
            assert "quick/web/" in installation.status()["recent"][0]["source"]

            assert page.locator("#redo-preset").input_value() == "quick"  # its own, to start with
            page.select_option("#redo-preset", "")
            page.click("#redo button")
            page.wait_for_url(f"{web.url}/gallery")
        finally:
            browser.close()
    installation.wait(lambda status: status["counts"]["done"] == 2, timeout=180)
    (second,) = [folder for folder in installation.result_folders() if folder != first]
    record = json.loads((second / "job.json").read_text())
    assert record["preset"] is None and record["redone_from"]["result"] == first.name
    assert len(list(second.glob("render_*.png"))) == 4  # the defaults of this installation
    deadline = time.monotonic() + 10
    while "preset quick" not in (installation.outbox / "index.html").read_text():
        assert time.monotonic() < deadline, "the gallery does not show the preset"
        time.sleep(0.2)
