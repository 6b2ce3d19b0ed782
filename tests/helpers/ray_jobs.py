"""Jobs through a Ray cluster, read back from the daemon's database: what the Ray tests drop and check."""

from __future__ import annotations

import json
import sqlite3
from typing import Any


from helpers.installation import Installation
from helpers.places import assert_in_one_place



# The tiny checkpoint's density grid at 64^3 takes a second or two on this CPU (its random field
# is dense everywhere): long enough for a test to catch a job on its actor and kill it there.
SLOW_DEVICE_PART = {"mc_resolution": 64}


def daemon_workers(setup: Installation) -> list[dict[str, Any]]:
    """The workers the daemon recorded (read straight from the job database: milliseconds)."""
    try:
        with sqlite3.connect(setup.state / "recond.db") as db:
            row = db.execute("select workers from daemon").fetchone()
    except sqlite3.Error:
        return []
    return json.loads(row[0] or "[]") if row else []


def job_rows(setup: Installation) -> list[dict[str, Any]]:
    with sqlite3.connect(setup.state / "recond.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("select * from jobs order by id")]


def drop(setup: Installation, pictures: tuple[str, ...]) -> dict[str, bytes]:
    """Copy the pictures into the inbox (each renamed into place whole); returns their bytes."""
    dropped = {}
    for picture in pictures:
        data = (setup.examples / picture).read_bytes()
        partial = setup.inbox / f".{picture}.part"
        partial.write_bytes(data)
        partial.rename(setup.inbox / picture)
        dropped[picture] = data
    return dropped


def all_done(count: int):
    return lambda status: status["counts"]["done"] == count and status["counts"]["running"] == 0


def assert_each_published_once(setup: Installation, dropped: dict[str, bytes]) -> None:
    for data in dropped.values():
        assert assert_in_one_place(data, setup.inbox, setup.outbox).startswith("result ")
    assert len(setup.result_folders()) == len(dropped)
