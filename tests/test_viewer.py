"""The result page: a real headless Chromium opens index.html from file:// with no network.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe), which
needs no extra Python package: messages are JSON strings separated by NUL bytes.
"""

import base64
import io
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from recond.pipeline.texture import bake_texture
from recond.pipeline.viewer import write_viewer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (960, 640)
PANEL_RIGHT_EDGE = 300  # the file/controls card covers the canvas left of this
BACKGROUND = np.array([236, 239, 243])
FILES = ["mesh.obj", "mesh.mtl", "texture.png", "mesh.glb", "mesh.stl", "render.mp4", "source.jpg"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")


class DevToolsPipe:
    """A minimal DevTools-protocol client for one headless Chromium process."""

    def __init__(self, profile_dir: Path, extra_flags: tuple[str, ...] = ()):
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def give_child_the_pipe():  # Chromium expects its command pipe on fd 3, replies on fd 4
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        self.process = subprocess.Popen(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile_dir}",
                # No network at all: every host resolves to nothing and any proxy use dead-ends.
                "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--remote-debugging-pipe", *extra_flags,
            ],
            preexec_fn=give_child_the_pipe, close_fds=False,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.events: list[dict] = []
        self._replies: queue.Queue = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._read_messages, daemon=True).start()

    def _read_messages(self):
        pending = b""
        while chunk := os.read(self._from_browser, 1 << 16):
            pending += chunk
            *messages, pending = pending.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                (self._replies.put if "id" in message else self.events.append)(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._replies.get(timeout=30)
            if reply["id"] == self._next_id:
                assert "error" not in reply, reply
                return reply.get("result", {})

    def close(self):
        try:
            self.call("Browser.close")
        finally:
            self.process.wait(timeout=10)
            os.close(self._to_browser)


def open_page(page: Path, profile_dir: Path, extra_flags: tuple[str, ...] = ()) -> dict:
    """Open page via file://, wait for the viewer, return state, screenshot, errors, requests."""
    browser = DevToolsPipe(profile_dir, extra_flags)
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.call(f"{domain}.enable", session)
        browser.call("Emulation.setDeviceMetricsOverride", session, width=WINDOW[0], height=WINDOW[1],
                     deviceScaleFactor=1, mobile=False)
        browser.call("Page.navigate", session, url=page.resolve().as_uri())
        state, deadline = None, time.monotonic() + 40
        while state not in ("ready", "fallback") and time.monotonic() < deadline:
            time.sleep(0.2)
            state = browser.call("Runtime.evaluate", session, expression="document.documentElement.dataset.viewer",
                                 returnByValue=True)["result"].get("value")
        time.sleep(0.5)  # let a few animation frames reach the compositor
        shot = browser.call("Page.captureScreenshot", session, format="png")["data"]
        video_shown = browser.call(
            "Runtime.evaluate", session, returnByValue=True,
            expression="getComputedStyle(document.getElementById('fallback')).display !== 'none'",
        )["result"]["value"]
    finally:
        browser.close()
    errors = [event for event in browser.events if _is_error(event)]
    requests = [event["params"]["request"]["url"] for event in browser.events
                if event.get("method") == "Network.requestWillBeSent"]
    screenshot = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot))).convert("RGB"))
    return {"state": state, "screenshot": screenshot, "errors": errors, "requests": requests,
            "video_shown": video_shown}


def _is_error(event: dict) -> bool:
    method, params = event.get("method"), event.get("params", {})
    return (
        method == "Runtime.exceptionThrown"
        or (method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"))
        or (method == "Log.entryAdded" and params["entry"]["level"] == "error")
    )


def _red_field(points: np.ndarray) -> np.ndarray:
    return np.tile(np.array([[0.85, 0.12, 0.1]], dtype=np.float32), (len(points), 1))


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("result")
    capsule = trimesh.creation.capsule(height=0.8, radius=0.35, count=[24, 24])
    textured = bake_texture(capsule, _red_field, 128)
    for name in FILES:
        (folder / name).write_bytes(b"x" * 2048)
    write_viewer(folder, textured, FILES, title="Red capsule <test>")
    return folder


@pytest.fixture(scope="module")
def opened(result_dir, tmp_path_factory) -> dict:
    return open_page(result_dir / "index.html", tmp_path_factory.mktemp("profile"))


def test_page_shows_the_textured_model_without_console_errors(opened, tmp_path):
    Image.fromarray(opened["screenshot"]).save(tmp_path / "viewer.png")
    assert opened["state"] == "ready"
    assert opened["errors"] == []
    canvas = opened["screenshot"][:, PANEL_RIGHT_EDGE:].astype(int)
    model = np.abs(canvas - BACKGROUND).max(-1) > 30
    assert model.mean() > 0.05, "the canvas shows (almost) only background"
    red = model & (canvas[..., 0] > 2 * canvas[..., 1]) & (canvas[..., 0] > 100)
    assert red.sum() > 0.8 * model.sum(), "the model is not coloured by its texture"


def test_page_requests_nothing_but_itself(opened, result_dir):
    assert opened["requests"] == [(result_dir / "index.html").resolve().as_uri()]
    page = (result_dir / "index.html").read_text()
    assert not re.search(r"https?://", page)


def test_page_links_every_file_and_escapes_the_title(result_dir):
    page = (result_dir / "index.html").read_text()
    for name in FILES:
        assert f'href="{name}" download' in page
    assert "Red capsule &lt;test&gt;" in page and "<test>" not in page
    assert "{{" not in page  # every placeholder was filled


def test_without_webgl2_the_turntable_video_is_shown(result_dir, tmp_path):
    opened = open_page(result_dir / "index.html", tmp_path / "profile", extra_flags=("--disable-3d-apis",))
    assert opened["state"] == "fallback"
    assert opened["video_shown"] is True
    assert '<video src="render.mp4"' in (result_dir / "index.html").read_text()


def test_vertex_coloured_mesh_page_is_small_and_loads(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=3)
    sphere.visual.vertex_colors = np.tile([30, 160, 60, 255], (len(sphere.vertices), 1))
    page = write_viewer(tmp_path, sphere, ["mesh.glb"], title="Green sphere", video=None)
    opened = open_page(page, tmp_path / "profile")
    assert opened["state"] == "ready" and opened["errors"] == []
    canvas = opened["screenshot"][:, PANEL_RIGHT_EDGE:].astype(int)
    green = (canvas[..., 1] > 1.8 * canvas[..., 0]) & (canvas[..., 1] > 80)
    assert green.mean() > 0.05
    assert page.stat().st_size < 200_000
