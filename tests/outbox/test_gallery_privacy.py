"""Issue 27, item 3: the shared gallery (outbox/index.html) hides what a result hides.

Real pictures with real modes go through the worker (``StandInPipeline``: no model needed to
publish a result folder with the picture's permissions) and the page is read back from disk.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from helpers.settings import settings_for

from helpers.waiting import wait_for
from helpers.running import running, states
from helpers.stand_in import StandInPipeline

from recond.outbox.gallery import GALLERY_NAME
from recond.store import DONE


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def gallery(outbox: Path) -> str:
    """The shared page as it stands, "" before its first write: the worker records a job done
    and only then rewrites the page, so a test that saw DONE can still be early."""
    try:
        return (outbox / GALLERY_NAME).read_text()
    except FileNotFoundError:
        return ""


def test_a_0600_picture_is_not_named_in_the_shared_gallery(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    settings.outbox.chmod(0o755)
    with running(settings, StandInPipeline()) as (store, _, _):
        for name, mode in (("holiday-public.png", 0o644), ("passport-private.png", 0o600)):
            path = settings.inbox / name
            path.write_bytes(f"picture {name}".encode())
            path.chmod(mode)
        wait_for(lambda: states(store) == {"holiday-public.png": DONE, "passport-private.png": DONE})
        private = next(job for job in store.jobs(DONE) if job.source == "passport-private.png")
        public = next(job for job in store.jobs(DONE) if job.source == "holiday-public.png")
        wait_for(lambda: public.result_name in gallery(settings.outbox))
    page = (settings.outbox / GALLERY_NAME).read_text()
    assert mode_of(settings.outbox / private.result_name) == 0o700  # the result hides itself ...
    assert "passport" not in page and private.result_name not in page  # ... and the page hides it
    assert "holiday-public" in page and "1 private ones not listed" in page
    assert mode_of(settings.outbox / GALLERY_NAME) == 0o644  # the outbox's bits, not 0664


def drop(path: Path, data: bytes, mode: int) -> None:
    """A picture that has its mode from its first byte on (no window where intake sees 0644)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)
    os.chmod(path, mode)  # whatever the umask took away


def test_the_gallery_of_a_private_outbox_is_private_too(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    settings.outbox.chmod(0o700)
    with running(settings, StandInPipeline()) as (store, _, _):
        drop(settings.inbox / "mine.png", b"picture mine", 0o600)
        wait_for(lambda: states(store) == {"mine.png": DONE}, timeout=30)
        wait_for(lambda: "mine" in gallery(settings.outbox), timeout=30)  # only its owner reads it
    assert mode_of(settings.outbox / GALLERY_NAME) == 0o600


def test_a_group_share_lists_what_the_group_may_read(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    settings.outbox.chmod(0o770)
    with running(settings, StandInPipeline()) as (store, _, _):
        for name, mode in (("team.png", 0o640), ("own.png", 0o600)):
            drop(settings.inbox / name, f"picture {name}".encode(), mode)
        wait_for(lambda: set(states(store).values()) == {DONE} and len(states(store)) == 2, timeout=30)
        wait_for(lambda: "team" in gallery(settings.outbox), timeout=30)
    page = (settings.outbox / GALLERY_NAME).read_text()
    assert "own.png" not in page and mode_of(settings.outbox / GALLERY_NAME) == 0o660
