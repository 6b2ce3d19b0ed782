"""How a web upload is named in the inbox, and how that name reads back for people.

An upload is saved as ``web/<upload id>-<name>``: the id makes it unique and lets a client find
its job (the job's ``source`` starts with ``web/<upload id>-``). Pages show just ``<name>``.
Below both front ends and light (no web stack): the daemon's gallery and recond-web both
name pictures through :func:`shown_name`.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

UPLOAD_FOLDER = "web"  # inbox/web/: result names then read <time>_web_<upload id>-<name>
UPLOAD_ID = re.compile(r"[0-9a-f]{16}")
_UPLOADED = re.compile(rf"{UPLOAD_FOLDER}/[0-9a-f]{{16}}-(?P<name>.+)")


def upload_prefix(upload_id: str) -> str:
    """The start of the inbox path (the job's ``source``) of every file of this upload."""
    return f"{UPLOAD_FOLDER}/{upload_id}-"


def upload_source(upload_id: str, name: str) -> str:
    return f"{upload_prefix(upload_id)}{name}"


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
