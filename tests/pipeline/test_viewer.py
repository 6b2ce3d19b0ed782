"""The result page: a real headless Chromium opens index.html from file:// with no network.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe), which
needs no extra Python package: messages are JSON strings separated by NUL bytes.
"""

import base64
import fcntl
import io
import json
import os
import queue
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from helpers.browser import CHROMIUM
from recond.pipeline.texture import bake_texture
from recond.pipeline.viewer import write_viewer

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
            # Lift both ends above 4 first: a pipe end may itself be fd 3 or 4.
            read_end = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

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
            self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:  # never leave a browser behind, even after a failure
                self.process.kill()
                self.process.wait()
            os.close(self._to_browser)


class ViewerPage:
    """One page opened from file:// in its own headless Chromium, waited on until the viewer is up."""

    def __init__(self, page: Path, profile_dir: Path, extra_flags: tuple[str, ...] = ()):
        self.browser = DevToolsPipe(profile_dir, extra_flags)
        try:
            self._open(page)
        except BaseException:
            self.browser.close()
            raise

    def _open(self, page: Path):
        target = self.browser.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1],
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=page.resolve().as_uri())
        self.state, deadline = None, time.monotonic() + 40
        while self.state not in ("ready", "fallback") and time.monotonic() < deadline:
            time.sleep(0.2)
            self.state = self.evaluate("document.documentElement.dataset.viewer")
        time.sleep(0.3)  # let a few animation frames reach the compositor

    def call(self, method: str, **params) -> dict:
        return self.browser.call(method, self.session, **params)

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self) -> np.ndarray:
        time.sleep(0.3)  # the viewer redraws on the next animation frame
        data = self.call("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def drag(self, start: tuple[int, int], end: tuple[int, int], button: str = "left", modifiers: int = 0):
        steps = [start, ((start[0] + end[0]) // 2, (start[1] + end[1]) // 2), end]
        self.call("Input.dispatchMouseEvent", type="mousePressed", x=start[0], y=start[1], button=button,
                  clickCount=1, modifiers=modifiers)
        for x, y in steps[1:]:
            self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y, button=button, modifiers=modifiers,
                      buttons=2 if button == "right" else 1)
        self.call("Input.dispatchMouseEvent", type="mouseReleased", x=end[0], y=end[1], button=button,
                  clickCount=1, modifiers=modifiers)

    def wheel(self, at: tuple[int, int], delta_y: float):
        self.call("Input.dispatchMouseEvent", type="mouseWheel", x=at[0], y=at[1], deltaX=0, deltaY=delta_y)

    @property
    def errors(self) -> list[dict]:
        return [event for event in self.browser.events if _is_error(event)]

    @property
    def requests(self) -> list[str]:
        return [event["params"]["request"]["url"] for event in self.browser.events
                if event.get("method") == "Network.requestWillBeSent"]

    def close(self):
        self.browser.close()


def model_mask(screenshot: np.ndarray) -> np.ndarray:
    """Pixels of the canvas right of the panel that are not background."""
    canvas = screenshot[:, PANEL_RIGHT_EDGE:].astype(int)
    return np.abs(canvas - BACKGROUND).max(-1) > 30


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
    textured, _ = bake_texture(capsule, _red_field, 128)
    for name in FILES:
        (folder / name).write_bytes(b"x" * 2048)
    write_viewer(folder, textured, FILES, title="Red capsule <test>")
    return folder


@pytest.fixture(scope="module")
def viewer(result_dir, tmp_path_factory):
    page = ViewerPage(result_dir / "index.html", tmp_path_factory.mktemp("profile"))
    yield page
    page.close()


def test_page_shows_the_textured_model_without_console_errors(viewer):
    assert viewer.state == "ready"
    screenshot = viewer.screenshot()
    assert viewer.errors == []
    canvas = screenshot[:, PANEL_RIGHT_EDGE:].astype(int)
    model = model_mask(screenshot)
    assert model.mean() > 0.05, "the canvas shows (almost) only background"
    red = model & (canvas[..., 0] > 2 * canvas[..., 1]) & (canvas[..., 0] > 100)
    assert red.sum() > 0.8 * model.sum(), "the model is not coloured by its texture"


def test_page_requests_nothing_but_itself(viewer, result_dir):
    assert viewer.requests == [(result_dir / "index.html").resolve().as_uri()]
    page = (result_dir / "index.html").read_text()
    assert not re.search(r"https?://", page)


def test_page_links_every_file_and_escapes_the_title(result_dir):
    page = (result_dir / "index.html").read_text()
    for name in FILES:
        assert f'href="{name}" download' in page
    assert "Red capsule &lt;test&gt;" in page and "<test>" not in page
    assert "{{" not in page  # every placeholder was filled


def test_controls_orbit_zoom_pan_and_wireframe(viewer):
    viewer.evaluate("document.getElementById('rotate').click()")  # stop auto-rotation
    still = viewer.screenshot()
    assert np.array_equal(still, viewer.screenshot()), "the view still moves with auto-rotate off"
    centre = (PANEL_RIGHT_EDGE + (WINDOW[0] - PANEL_RIGHT_EDGE) // 2, WINDOW[1] // 2)

    viewer.drag(centre, (centre[0] + 120, centre[1] + 40))
    orbited = viewer.screenshot()
    assert (model_mask(orbited) != model_mask(still)).mean() > 0.01

    viewer.wheel(centre, -200)
    zoomed = viewer.screenshot()
    assert model_mask(zoomed).sum() > 1.3 * model_mask(orbited).sum()

    viewer.drag(centre, (centre[0] - 150, centre[1]), button="right")
    panned = viewer.screenshot()
    columns_before = np.nonzero(model_mask(zoomed))[1]
    columns_after = np.nonzero(model_mask(panned))[1]
    assert columns_after.mean() < columns_before.mean() - 60

    viewer.evaluate("document.getElementById('wireframe').click()")
    wired = viewer.screenshot()
    dark = lambda image: (image[:, PANEL_RIGHT_EDGE:].max(-1) < 70).sum()  # noqa: E731
    assert dark(wired) > dark(panned) + 500
    assert viewer.evaluate("document.getElementById('wireframe').getAttribute('aria-pressed')") == "true"
    assert viewer.errors == []


def test_without_webgl2_the_turntable_video_is_shown(result_dir, tmp_path):
    page = ViewerPage(result_dir / "index.html", tmp_path / "profile", extra_flags=("--disable-3d-apis",))
    try:
        assert page.state == "fallback"
        assert page.evaluate("getComputedStyle(document.getElementById('fallback')).display") == "flex"
        assert page.evaluate("document.querySelector('#fallback video').getAttribute('src')") == "render.mp4"
    finally:
        page.close()


def test_vertex_coloured_mesh_page_is_small_and_loads(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=3)
    sphere.visual.vertex_colors = np.tile([30, 160, 60, 255], (len(sphere.vertices), 1))
    path = write_viewer(tmp_path, sphere, ["mesh.glb"], title="Green sphere", video=None)
    page = ViewerPage(path, tmp_path / "profile")
    try:
        screenshot = page.screenshot()
        assert page.state == "ready" and page.errors == []
    finally:
        page.close()
    canvas = screenshot[:, PANEL_RIGHT_EDGE:].astype(int)
    green = (canvas[..., 1] > 1.8 * canvas[..., 0]) & (canvas[..., 1] > 80)
    assert green.mean() > 0.05
    assert path.stat().st_size < 200_000


def test_page_that_cannot_draw_falls_back_to_the_video(result_dir, tmp_path):
    page = (result_dir / "index.html").read_text()
    # An undecodable texture (e.g. a truncated download) must not leave a blank page.
    broken = re.sub(r'"texture": "[^"]+"', '"texture": "bm90IGFuIGltYWdl"', page)
    assert broken != page
    (tmp_path / "index.html").write_text(broken)
    opened = ViewerPage(tmp_path / "index.html", tmp_path / "profile")
    try:
        assert opened.state == "fallback"
        assert opened.evaluate("getComputedStyle(document.querySelector('.controls')).display") == "none"
    finally:
        opened.close()
