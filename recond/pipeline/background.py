"""Background stage: isolate the object, because TripoSR expects it on a plain grey field.

The method is chosen once, when the pipeline is built, so a job never waits on (or tries) a
model download: a picture with a real alpha channel keeps it; otherwise rembg runs with a warm
session when its model file is on disk, and if it is not, OpenCV GrabCut seeded from the image
border stands in and the result carries a warning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from recond.config import ModelSettings

# numba (rembg's alpha matting, through pymatting) tries Intel TBB first and, finding an older
# TBB, warns once per process before it falls back to OpenMP, which is what it uses anyway:
# noise on the first job's terminal (issue 26), not a problem.
warnings.filterwarnings("ignore", message="The TBB threading layer requires TBB")

# GrabCut runs on a copy no larger than this (it is iterative and slow on full-size photos).
GRABCUT_MAX_SIDE = 512
GRABCUT_BORDER = 0.04  # share of each side taken as sure background
GRABCUT_ITERATIONS = 5
GRABCUT_WARNING = (
    "rembg model not available offline; background removed with GrabCut, which is less "
    "precise (copy the rembg model file into the rembg home, see docs/offline.md)"
)


GRABCUT_FALLBACK = "GrabCut will be used instead"
# One availability check before rembg's download: offline, the answer comes within 2 s, as the
# TripoSR weights' does (recond/triposr/hub.py, HUB_TIMEOUT_SECONDS).
REMBG_PROBE_TIMEOUT_SECONDS = 1.5


class BackgroundUnavailable(RuntimeError):
    """The configured background method cannot run on this machine."""


@dataclass(frozen=True)
class RembgStatus:
    available: bool
    path: Path
    message: str


def rembg_model_status(settings: ModelSettings) -> RembgStatus:
    """Is the rembg model file on disk? Looked up where rembg itself looks, without a download.

    With ``rembg_home`` set, the two places rembg looks in it are tried first: when neither holds
    the file, the answer needs no rembg import (1.2 CPU-s at each start, mostly pymatting loading
    its numba kernels), which every start of an offline server still waiting for its model paid.
    """
    point_rembg_at(settings)
    file_name = f"{settings.rembg_model}.onnx"
    if settings.rembg_home is not None:
        expected, legacy = named_home_places(settings)
        if not (expected.exists() or legacy.exists()):
            return _not_found(settings, expected, legacy)
    session_class = _rembg_session_class(settings.rembg_model)
    found = session_class.resolve_existing(file_name)
    if found:
        return RembgStatus(True, Path(found), f"rembg model {settings.rembg_model} found at {found}")
    return _not_found(settings, Path(session_class.model_dir()) / file_name,
                      Path(session_class.legacy_home()) / file_name)


def named_home_places(settings: ModelSettings) -> tuple[Path, Path]:
    """Where rembg looks for the model file when U2NET_HOME names ``rembg_home`` (point_rembg_at):
    ``<home>/models/<name>/<name>.onnx``, then the older flat ``<home>/<name>.onnx`` (rembg's
    BaseSession.model_dir and legacy_home; tests/pipeline/test_background.py holds the two to
    rembg's own answer, so a rembg that looks elsewhere fails the suite, not a server)."""
    assert settings.rembg_home is not None
    home = settings.rembg_home.expanduser().resolve()
    file_name = f"{settings.rembg_model}.onnx"
    return home / "models" / settings.rembg_model / file_name, home / file_name


def _not_found(settings: ModelSettings, expected: Path, legacy: Path) -> RembgStatus:
    return RembgStatus(
        False,
        expected,
        f"rembg model {settings.rembg_model} not found (looked in {expected} and "
        f"{legacy}); {GRABCUT_FALLBACK}",
    )


def download_rembg_model(settings: ModelSettings,
                         progress: Callable[[float], None] = lambda fraction: None) -> str | None:
    """Fetch rembg's model into rembg's own home on the first start, never during a job.

    Only when ``rembg_home`` is unset: a folder named there is the operator's, filled by hand on
    offline servers. The download is rembg's own (pooch), with a bar on a terminal and the
    fraction done handed to ``progress``, after one quick check that the file's server answers.
    Returns a warning line when it cannot be fetched; GrabCut then stands in, as before.
    """
    if settings.background in ("alpha", "none") or settings.rembg_home is not None:
        return None
    if rembg_model_status(settings).available:
        return None
    try:
        with _probed_pooch(progress):
            _rembg_session_class(settings.rembg_model).download_models()
    except Exception as error:  # offline, DNS, HTTP, checksum: GrabCut stands in
        reason = str(error) if isinstance(error, RembgUnreachable) else type(error).__name__
        return (f"rembg model {settings.rembg_model} could not be downloaded ({reason}); "
                f"{GRABCUT_FALLBACK} (to place it by hand see docs/offline.md)")
    return None


class RembgUnreachable(ConnectionError):
    """The server of rembg's model file did not answer the quick check."""


def _check_reachable(url: str) -> None:
    """One HEAD request with a short timeout, no retries; raises RembgUnreachable when nothing
    answers. Any answer, even an HTTP error, lets the download itself run and report it.

    pooch's own download waits up to 30 s per request (pooch/downloaders.py, DEFAULT_TIMEOUT),
    which offline made every start wait ~43 s (issue 19). This asks with pooch's own
    availability check, so proxies and certificates are handled exactly as the download's.
    """
    import pooch

    try:
        pooch.HTTPDownloader(timeout=REMBG_PROBE_TIMEOUT_SECONDS)(url, None, None, check_only=True)
    except Exception as error:  # offline, DNS, proxy, timeout: all mean "not now"
        raise RembgUnreachable(f"{urlsplit(url).hostname} cannot be reached: "
                               f"{type(error).__name__}, asked with a "
                               f"{REMBG_PROBE_TIMEOUT_SECONDS} s timeout") from None


@contextmanager
def _probed_pooch(progress: Callable[[float], None]) -> Iterator[None]:
    """While rembg downloads, pooch first checks that the file's server answers, then gets a
    progress bar that also reports the fraction done.

    rembg calls ``pooch.retrieve(url, ..., progressbar=True)`` itself and offers no other hook
    (the URL is written in each session class), so both are handed in by wrapping
    ``pooch.retrieve`` for the length of one download. pooch's downloader sets ``total``, then
    calls ``update`` per chunk and ``reset``/``close``.
    """
    import pooch
    from tqdm.auto import tqdm

    class ReportingBar(tqdm):
        received = 0  # kept here: a disabled bar (no terminal, e.g. under systemd) counts nothing

        def update(self, n: float | None = 1) -> bool | None:
            self.received += int(n or 0)
            if self.total:
                progress(min(1.0, self.received / float(self.total)))
            return super().update(n)

        def reset(self, total: float | None = None) -> None:
            self.received = 0
            super().reset(total)

    original = pooch.retrieve

    def retrieve(url: str, *args: Any, **kwargs: Any) -> Any:
        _check_reachable(url)
        bar = ReportingBar(unit="B", unit_scale=True, disable=None, desc=f"rembg {kwargs.get('fname', '')}")
        return original(url, *args, **{**kwargs, "progressbar": bar})

    pooch.retrieve = retrieve
    try:
        yield
    finally:
        pooch.retrieve = original


def _rembg_session_class(model_name: str):
    from rembg.sessions import sessions_class

    for session_class in sessions_class:
        if session_class.name() == model_name:
            return session_class
    known = ", ".join(sorted(c.name() for c in sessions_class))
    raise BackgroundUnavailable(f"unknown rembg model '{model_name}' (setting rembg_model; known: {known})")


def point_rembg_at(settings: ModelSettings) -> None:
    """Hand the rembg_home setting to rembg, which reads U2NET_HOME itself.

    The one place recond writes the environment: rembg offers no other way to name its folder.
    """
    if settings.rembg_home is not None:
        os.environ["U2NET_HOME"] = str(settings.rembg_home.expanduser().resolve())


def has_real_alpha(image: Image.Image) -> bool:
    """True when the alpha channel masks something: some of it clear, some of it solid."""
    if image.mode != "RGBA":
        return False
    alpha = np.asarray(image)[..., 3]
    clear = np.mean(alpha < 16)
    solid = np.mean(alpha > 127)
    return bool(clear >= 0.01 and solid >= 0.001)


class BackgroundRemover:
    """Holds the warm rembg session (if any) and applies the configured background method."""

    def __init__(self, settings: ModelSettings) -> None:
        self.mode = settings.background
        self.session = None
        self.method = {"alpha": "alpha", "none": "none"}.get(self.mode, "rembg")
        if self.method == "rembg":
            status = rembg_model_status(settings)
            if status.available:
                from rembg import new_session

                self.session = new_session(settings.rembg_model)
            elif self.mode == "rembg":
                raise BackgroundUnavailable(f"background = rembg, but {status.message.split(';')[0]}")
            else:
                self.method = "grabcut"

    def remove(self, image: Image.Image) -> tuple[Image.Image, str, list[str]]:
        """An RGBA picture -> (RGBA with the object opaque, method used, warnings)."""
        if self.mode == "none":
            return _opaque(image), "none", []
        if self.mode == "alpha" or (self.mode == "auto" and has_real_alpha(image)):
            if has_real_alpha(image):
                return image, "alpha", []
            return _opaque(image), "alpha", ["the picture has no transparency; the whole frame was used"]
        if self.session is not None:
            from rembg import remove

            return remove(image.convert("RGB"), session=self.session).convert("RGBA"), "rembg", []
        return grabcut_foreground(image), "grabcut", [GRABCUT_WARNING]


def _opaque(image: Image.Image) -> Image.Image:
    rgba = np.asarray(image.convert("RGBA")).copy()
    rgba[..., 3] = 255
    return Image.fromarray(rgba)


def grabcut_foreground(image: Image.Image) -> Image.Image:
    """Cut the object out with GrabCut, seeding the image border as background."""
    import cv2

    rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    scale = min(1.0, GRABCUT_MAX_SIDE / max(height, width))
    small = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA)
    mask = np.zeros(small.shape[:2], np.uint8)
    border_y = max(1, round(small.shape[0] * GRABCUT_BORDER))
    border_x = max(1, round(small.shape[1] * GRABCUT_BORDER))
    rect = (border_x, border_y, small.shape[1] - 2 * border_x, small.shape[0] - 2 * border_y)
    background_model = np.zeros((1, 65), np.float64)
    foreground_model = np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), mask, rect, background_model,
                    foreground_model, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_RECT)
        foreground = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    except cv2.error:  # too small or uniform to model: keep the whole frame
        foreground = np.ones(small.shape[:2], np.float32)
    # Soft edge at full size, as a matte would have.
    alpha = cv2.resize(cv2.GaussianBlur(foreground, (0, 0), 1.0), (width, height),
                       interpolation=cv2.INTER_LINEAR)
    rgba = np.dstack([rgb, np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)])
    return Image.fromarray(rgba)
