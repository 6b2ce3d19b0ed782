"""Redo: a published result's picture queued again as a new job, with another preset or other
settings (issue 25). The old folder stays; the daemon publishes the redo as a new one.

How the bytes stay in one place: a redo copies nothing into the inbox. Its job is a row in the
store that names the old result folder (``redo_of``); the worker reads the picture from that
folder's ``source.*``, checked against the sha256 recorded now, and on a failure leaves it
there (nothing moves to inbox/failed/). The picture's one place is, as before, a result's
``source.*``: every result keeps the copy it was made from, so the redo's folder has its own.
A copy in the inbox would instead be taken by the intake as a duplicate of the done job and
never redone, or need a second way into the queue beside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from recond.config import Settings, check_job_values
from recond.inbox import dropped
from recond.names import result_name_for
from recond.pipeline.record import read_record
from recond.store import Job, Store

REDO_FOLDER = "redo"  # names a redo's result folder <time>_redo_<stem>


class RedoRefused(ValueError):
    """The result cannot be redone as asked; the message says why in one sentence."""


@dataclass(frozen=True)
class Redo:
    """What a redo queues: the old folder, its picture, and the new preset and settings."""

    result_name: str
    source: str  # the picture's name, as the old job.json gives it
    source_copy: str
    sha256: str
    size: int
    preset: str | None
    overrides: dict[str, Any]


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """``["render_views=3", ...]`` -> ``{"render_views": "3"}``; RedoRefused without a ``=``."""
    values = {}
    for assignment in assignments:
        key, equals, value = assignment.partition("=")
        if not equals or not key.strip():
            raise RedoRefused(f"--set {assignment!r}: write KEY=VALUE, e.g. render_views=3")
        values[key.strip()] = value.strip()
    return values


def plan_redo(settings: Settings, result: str, preset: str | None,
              assignments: dict[str, str]) -> Redo:
    """The redo of the result folder ``result`` (its name in the outbox, or its path there).

    Without ``preset`` (None) the old one is kept (while the settings still have it); ``""``
    means none, the defaults. The old result's --set values are kept under the new ones: a redo
    of a redo changes only what it names. Raises RedoRefused naming what is wrong.
    """
    outbox = settings.outbox.resolve()
    given = Path(result)
    name = given.name
    folder = outbox / name
    elsewhere = len(given.parts) > 1 and given.expanduser().resolve().parent != outbox
    if not name or name.startswith(".") or elsewhere:  # a name in the outbox, or a path to one
        raise RedoRefused(f"{result} is not a result folder in the outbox {outbox}")
    record = read_record(folder)
    copy, source = record.get("source_copy"), record.get("source")
    if not isinstance(copy, str) or not isinstance(source, str) or PurePosixPath(copy).name != copy:
        raise RedoRefused(f"{folder} is not a published result (it has no job.json naming its "
                          "source.* copy)")
    if preset and preset not in settings.presets:
        known = ", ".join(sorted(settings.presets)) or "none are set"
        raise RedoRefused(f"no preset '{preset}' in the settings (presets: {known})")
    if preset is None and record.get("preset") in settings.presets:
        preset = record["preset"]
    preset = preset or None
    try:
        overrides = {**(record.get("overrides") or {}),
                     **check_job_values(assignments, "--set")}
        read = dropped.read(outbox, f"{name}/{copy}", settings.max_file_bytes)
    except ValueError as error:
        raise RedoRefused(str(error)) from None
    except OSError as error:
        raise RedoRefused(f"{folder / copy} cannot be read ({error.strerror or error})") from None
    return Redo(name, source, copy, read.sha256, read.size, preset, overrides)


def queue_redo(store: Store, redo: Redo) -> Job:
    """Record the redo as a queued job; the daemon takes it like any other, oldest first."""
    new_name = result_name_for(f"{REDO_FOLDER}/{redo.source}", time.time())
    return store.enqueue_redo(redo.source, redo.sha256, redo.size, new_name, redo.result_name,
                              redo.preset, redo.overrides)


def redone_from(job: Job, outbox: Path) -> dict[str, Any] | None:
    """What job.json says a redo was made from: the old folder's name and path, its job and
    preset (None for a job that is not a redo)."""
    if not job.redo_of:
        return None
    old = read_record(outbox / job.redo_of)
    return {"result": job.redo_of, "path": str(outbox / job.redo_of),
            "job": old.get("job"), "preset": old.get("preset"), "overrides": old.get("overrides") or {}}
