"""Names recond gives to what it handles: result folders, web uploads and how each reads back
for people.

One owner for each naming rule (how long a name may be on disk, the result folder's
time-stamped name, the ``-2`` of a taken name, a web upload's id), imported by the store, the
host part, the inbox and outbox wings and the front ends alike (issues 10, 24).
An upload is saved as ``web/<upload id>-<name>``: the id makes it unique and lets a client find
its job (the job's ``source`` starts with ``web/<upload id>-``). Pages show just ``<name>``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import PurePosixPath

NAME_MAX_BYTES = 255  # one path component on Linux filesystems (ext4, xfs, btrfs, SMB, NFS)
# Room left in a result name for the staging prefix "." and ".<owner>.partial" around it.
RESULT_NAME_MAX_BYTES = 200

# inbox/failed/ holds what could not be processed. When something that is not a folder holds
# that name (a user's file called "failed", a symlink), the second name is used instead.
FAILED_FOLDERS = ("failed", "failed-recond")
UPLOAD_FOLDER = "web"  # inbox/web/: result names then read <time>_web_<upload id>-<name>
UPLOAD_ID = re.compile(r"[0-9a-f]{16}")
# An upload with a preset lies under the preset's folder: <preset>/web/<upload id>-<name> (issue 25).
_UPLOADED = re.compile(rf"(?:[^/]+/)?{UPLOAD_FOLDER}/(?P<id>[0-9a-f]{{16}})-(?P<name>.+)")
# Inbox folders that are never a preset's: the uploads' and failed/ (config.WorkflowSettings).
RESERVED_FOLDERS = (UPLOAD_FOLDER, *FAILED_FOLDERS)


def fs_bytes(name: str) -> bytes:
    """The name's bytes on disk (names that are not UTF-8 arrive with surrogate escapes)."""
    return os.fsencode(name)


def shorten(name: str, max_bytes: int, keep_suffix: bool = True) -> str:
    """``name`` cut to ``max_bytes`` on disk; a cut name gets a short hash of the whole name,
    so two long names that share a beginning stay different, and keeps its extension."""
    raw = fs_bytes(name)
    if len(raw) <= max_bytes:
        return name
    suffix = os.fsencode(PurePosixPath(name).suffix) if keep_suffix else b""
    if len(suffix) > 16:
        suffix = b""
    tag = b"-" + hashlib.sha256(raw).hexdigest()[:8].encode()
    head = raw[: max_bytes - len(tag) - len(suffix)]
    # Never end in the middle of a UTF-8 character (it would become a surrogate escape).
    head = head.decode("utf-8", "ignore").encode() if _is_utf8(raw) else head
    return os.fsdecode(head + tag + suffix)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def display_name(name: str) -> str:
    """The name as text for people, logs and the database (undecodable bytes shown as U+FFFD)."""
    return fs_bytes(name).decode("utf-8", "replace")


def result_name_for(source: str, queued_at: float) -> str:
    """``20261125-071503_<subfolders>_<stem>``: sorts by time, says where the photo came from.

    Only letters, digits, ``.``, ``_`` and ``-`` survive, and the name fits a folder name with
    room for the staging suffix; the original name stays in job.json and the job record.
    """
    relative = PurePosixPath(display_name(source))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(queued_at))
    words = [re.sub(r"[^\w.-]+", "-", part).strip(".-")
             for part in (*relative.parent.parts, relative.stem)]
    name = "_".join([stamp, *(word for word in words if word)])
    return shorten(name, RESULT_NAME_MAX_BYTES, keep_suffix=False)


def free_name(name: str, taken: Callable[[str], bool]) -> str:
    """``name``, or ``name-2``, ``name-3`` ... : the first one ``taken`` says is free."""
    candidate, number = name, 1
    while taken(candidate):
        number += 1
        candidate = f"{name}-{number}"
    return candidate


# Web uploads.

def upload_prefix(upload_id: str) -> str:
    """The start of the inbox path (the job's ``source``) of every file of this upload made
    without a preset; with one, the path starts with ``<preset>/`` and then this."""
    return f"{UPLOAD_FOLDER}/{upload_id}-"


def upload_source(upload_id: str, name: str, preset: str | None = None) -> str:
    return f"{preset}/{upload_prefix(upload_id)}{name}" if preset else f"{upload_prefix(upload_id)}{name}"


def is_upload_of(source: str, upload_id: str) -> bool:
    """Whether the job's ``source`` is a file of this web upload (with or without a preset)."""
    uploaded = _UPLOADED.fullmatch(source)
    return uploaded is not None and uploaded["id"] == upload_id


def shown_name(source: str) -> str:
    """What a page calls a job's picture: its inbox path, without a web upload's id."""
    uploaded = _UPLOADED.fullmatch(source)
    return uploaded["name"] if uploaded else str(PurePosixPath(source))


def shown_file_name(folder: str, name: str) -> str:
    """:func:`shown_name` for a file on disk known by its folder's and its own name (the
    pipeline titles a result's viewer with it): a web upload's name loses its id."""
    uploaded = _UPLOADED.fullmatch(f"{folder}/{name}")
    return uploaded["name"] if uploaded else name


def without_upload_id(text: str, source: str) -> str:
    """A message about a job (its error) with the picture named as people know it: the inbox
    path, or the file name the daemon gave it, becomes :func:`shown_name`."""
    name = shown_name(source)
    return text.replace(source, name).replace(PurePosixPath(source).name, name)
