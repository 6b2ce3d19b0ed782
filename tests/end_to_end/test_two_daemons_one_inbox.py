"""Issue 27, item 2, end to end: two real `recond` processes with two state dirs on one inbox.

The second is refused with a message naming the first (host, pid, state dir); after a kill -9 of
the first mid-run, the second takes the inbox over (the first's pid is gone), learns what the
first published, and each of the 10 pictures ends published exactly once. The real pipeline
runs on the tiny checkpoint with small settings (host_workers = 0 keeps it to one process).
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from pathlib import Path

from helpers.places import assert_each_in_one_place
from PIL import Image
from helpers.installation import Installation, counts

from recond.shares.lease import LEASE_NAME

SMALL = {"host_workers": 0, "mc_resolution": 24, "texture_resolution": 64, "render_views": 2, "video_fps": 2}


def pictures(count: int) -> dict[str, bytes]:
    """Small distinct RGBA pictures (transparent around a square: no background model needed)."""
    made = {}
    for index in range(count):
        image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
        image.paste((40 + 20 * index, 120, 200 - 10 * index, 255), (16, 16, 48, 48))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        made[f"p{index:02d}.png"] = buffer.getvalue()
    return made


def done_in(state: Path) -> int:
    try:
        with sqlite3.connect(state / "recond.db") as db:
            return int(db.execute("select count(*) from jobs where state = 'done'").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_second_daemon_on_one_inbox_is_refused_and_after_a_kill_9_each_picture_is_published_once(
        tmp_path: Path, tiny_model_dir: Path, shared_dir: Path) -> None:
    for root in ("one", "two"):
        (tmp_path / root).mkdir()
    first = Installation(tmp_path / "one", tiny_model_dir, shared_dir / "examples", **SMALL)
    second = Installation(tmp_path / "two", tiny_model_dir, shared_dir / "examples", **SMALL,
                          inbox=str(first.inbox), outbox=str(first.outbox))
    dropped = pictures(10)
    try:
        first.start()
        for name, data in dropped.items():
            (first.inbox / f".{name}.part").write_bytes(data)
            (first.inbox / f".{name}.part").rename(first.inbox / name)
        first.wait_for_stage(("load", "background", "reconstruct", "grid", "mesh", "texture"))
        refused = second.start()
        assert refused.wait(60) == 1
        message = second.stderr()
        assert "another recond works on the inbox" in message
        assert f"pid {first.process.pid}" in message and str(first.state) in message
        assert done_in(second.state) == 0  # it queued nothing, ran nothing

        deadline = time.monotonic() + 120
        while done_in(first.state) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        first.wait_for_stage(("reconstruct", "grid", "mesh", "texture", "export", "render"))
        first.process.kill()  # kill -9 mid-run
        first.process.wait(10)
        lease = json.loads((first.inbox / LEASE_NAME).read_text())
        assert lease["pid"] == first.process.pid  # left behind by the kill

        second.start()  # the holder's pid is gone on this host: the inbox is taken over at once
        status = second.wait(lambda s: counts(s)["done"] >= 10 and not counts(s)["queued"]
                             and not counts(s)["running"], timeout=240)
        assert counts(status)["failed"] == 0
        results = [folder for folder in first.result_folders() if not folder.name.startswith(".")]
        assert len(results) == 10, [folder.name for folder in results]
        places = assert_each_in_one_place(list(dropped.values()), first.inbox, first.outbox)
        assert all(place.startswith("result") for place in places)

        again = first.start()  # the first comes back: now it is the one refused
        assert again.wait(60) == 1 and f"pid {second.process.pid}" in first.stderr()
        assert second.stop() == 0
        assert not (first.inbox / LEASE_NAME).exists()  # released by the clean stop
    finally:
        first.stop()
        second.stop()
