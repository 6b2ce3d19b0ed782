"""The upload page tells people where their photos stand when recond cannot work on them: a real
`recond` daemon without weights (jobs stay queued, its model "missing"), then stopped, beside a
real `recond-web`, watched in headless Chromium.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.browser import CHROMIUM
from helpers.installation import Installation
from helpers.web_server import WebServer, free_port

BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_queue_places_and_a_missing_or_stopped_daemon_are_shown(tmp_path: Path, shared_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    installation = Installation(tmp_path, tmp_path / "no-weights-here", shared_dir / "examples",
                                web_port=free_port(), model_retry_seconds=600)
    installation.start()
    web = WebServer(installation.config, tmp_path / "web.stderr")
    try:
        installation.wait(lambda status: status["daemon"]["model"] == "missing")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
            try:
                page = browser.new_page()
                requested: list[str] = []
                page.on("request", lambda request: requested.append(request.url))
                page.goto(f"{web.url}/")
                pictures = [installation.examples / name for name in ("chair.png", "robot.png", "flamingo.png")]
                for picture in pictures:  # one at a time: their order in the queue is known
                    page.set_input_files("#pick", [str(picture)])
                    page.wait_for_function("""(name) => [...document.querySelectorAll('#uploads li')]
                        .some(row => row.querySelector('.name').textContent === name &&
                                     row.dataset.state === 'queued')""", arg=picture.name, timeout=30_000)

                def statuses() -> dict[str, str]:
                    return dict(page.evaluate("""() => [...document.querySelectorAll('#uploads li')]
                        .map(row => [row.querySelector('.name').textContent,
                                     row.querySelector('.status').textContent])"""))

                page.wait_for_function("() => !document.getElementById('notice').hidden", timeout=10_000)
                assert "recond cannot load its model" in page.inner_text("#notice")
                page.wait_for_function("""() => document.querySelector('#uploads li .status')
                    .textContent.includes('ahead')""", timeout=10_000)
                assert statuses() == {
                    "chair.png": "queued: next in line · recond has no model",
                    "robot.png": "queued: 1 ahead of it · recond has no model",
                    "flamingo.png": "queued: 2 ahead of it · recond has no model"}

                installation.process.terminate()  # recond stops; the page says so
                installation.process.wait(30)
                page.wait_for_function("""() => document.getElementById('notice').textContent
                    .includes('recond is not running')""", timeout=15_000)
                page.wait_for_function("""() => [...document.querySelectorAll('#uploads li .status')]
                    .every(status => status.textContent.endsWith('recond is not running'))""", timeout=15_000)

                page.reload()  # the list, and where each stands, survive a reload
                page.wait_for_function("""() => [...document.querySelectorAll('#uploads li')]
                    .filter(row => row.dataset.state === 'queued').length === 3""", timeout=15_000)
                assert list(statuses()) == ["flamingo.png", "robot.png", "chair.png"]  # newest first
                page.goto(f"{web.url}/docs")  # the API's own page, served whole from here
                page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
                assert page.locator(".opblock-summary-path[data-path='/progress/{upload_or_job_id}']").count() == 1
                head = page.request.head(f"{web.url}/favicon.ico")  # headless Chromium asks for none
                assert head.ok and head.headers["content-type"] == "image/svg+xml"
                assert all(url.startswith(web.url) for url in requested), requested  # nothing outside
            finally:
                browser.close()
    finally:
        web.stop()
        installation.stop()
