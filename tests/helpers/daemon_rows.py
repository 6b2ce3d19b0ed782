"""What a running daemon's row in its database says of its workers, read straight from SQLite."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from helpers.installation import Installation


def daemon_row(installation: Installation) -> dict[str, Any]:
    """The daemon's row straight from the database (milliseconds, unlike a reconctl run)."""
    try:
        with sqlite3.connect(installation.state / "recond.db") as db:
            db.row_factory = sqlite3.Row
            row = db.execute("select * from daemon").fetchone()
    except sqlite3.Error:
        return {}
    return dict(row) if row else {}


def busy_host_workers(installation: Installation) -> list[dict[str, Any]]:
    workers = json.loads(daemon_row(installation).get("workers") or "[]")
    return [worker for worker in workers if worker["kind"] == "host" and worker["busy"]]


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
