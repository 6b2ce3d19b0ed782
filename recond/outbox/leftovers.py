"""Clean-up of a killed run's staging folders, and telling whose they are.

A daemon removes its own leftovers at start (its owner tag is in their names) and those of
``reconctl process`` runs on this host whose process is gone; another daemon's are kept.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from recond.outbox.publish import STAGING_SUFFIX, owner_tag
from recond.shares.lease import pid_alive


def process_owner(pid: int) -> str:
    """The owner tag of a ``reconctl process`` run: this host's tag and the run's pid, so a
    later start on this host can tell the staging folders of a killed run (its pid is gone)."""
    return f"{owner_tag(_PROCESS_RUNS)}.pid{pid}"


_PROCESS_RUNS = "reconctl process"
_PROCESS_STAGING = re.compile(r"\.(?P<owner>[0-9a-f]{10})\.pid(?P<pid>\d+)-\d+" + re.escape(STAGING_SUFFIX))


def clean_staging(outbox: Path, owner: str) -> list[Path]:
    """Remove this owner's staging folders (left by a crash or a kill) and those of killed
    ``reconctl process`` runs on this host; others' are kept."""
    marker = f".{owner}-"
    removed: list[Path] = []
    try:
        entries = list(os.scandir(outbox))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(STAGING_SUFFIX)):
            continue
        run = _PROCESS_STAGING.search(entry.name)
        dead_run = (run is not None and run["owner"] == owner_tag(_PROCESS_RUNS)
                    and not pid_alive(int(run["pid"])))
        if marker in entry.name or dead_run:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


    return True
