"""Setting a file aside in inbox/failed/ and recording why, so that the move and its record
agree after any kill: the record of a file moved just before a kill is found again by
``find_in_failed`` (issue 18). Used by the worker (a failed job) and intake (a file
refused before it is read, e.g. over max_file_bytes).
"""

from __future__ import annotations

from pathlib import Path

from recond.inbox import dropped
from recond.inbox import failed
from recond.logging import get_logger
from recond.names import display_name
from recond.store import Job, Store

log = get_logger("recond.inbox.set_aside")


def set_aside(store: Store, inbox: Path, job: Job, reason: str) -> None:
    """Record the job failed with ``reason`` and move its file to inbox/failed/ with a note."""
    reason = display_name(reason)  # a message may quote a name that is not UTF-8
    try:
        kept = failed.move_to_failed(inbox, job.source_name, job.id, reason)
        if kept is None:  # gone: perhaps moved there by a run killed before recording it
            kept = failed.find_in_failed(inbox, job.source_name, job.id, job.sha256, job.size)
    except OSError as error:  # e.g. a read-only inbox, a folder on the way now a link
        log.warning("original not moved to failed/", job=job.id, file=job.source, error=str(error))
        kept = inbox / job.source_name if dropped.kind(inbox, job.source_name) else None
        reason = (f"{reason} (it stays in the inbox: moving it to failed/ failed: "
                  f"{error.strerror or error})")
    store.fail(job.id, reason, kept_at=kept)
