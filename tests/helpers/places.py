"""Nothing dropped is ever lost: where a picture's bytes lie after any path through recond (a
published result's ``source.*``, ``inbox/failed/``, or still in the inbox), checked on disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from recond.inbox.failed import is_in_failed


def places_holding(data: bytes, inbox: Path, outbox: Path) -> list[str]:
    """Every place these exact bytes lie: a published result's source.*, a file in the inbox's
    failed folder, or a file still in the inbox (links and staging folders are no place)."""
    return places_of([data], inbox, outbox)[data]


def places_of(datas: list[bytes], inbox: Path, outbox: Path) -> dict[bytes, list[str]]:
    """``places_holding`` for many pictures at once, in one walk of the folders."""
    places: dict[bytes, list[str]] = {data: [] for data in datas}
    sizes = {len(data) for data in datas}

    def note(path: Path, place: str) -> None:
        if path.stat().st_size in sizes:
            found = places.get(path.read_bytes())
            if found is not None:
                found.append(place)

    if outbox.is_dir():
        for result in sorted(outbox.iterdir()):
            if not result.name.startswith("."):
                for copy in result.glob("source.*"):
                    note(copy, f"result {result.name}")
    for root, _, names in os.walk(inbox):
        for name in names:
            path = Path(root) / name
            if name.endswith(".error.txt") or not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            relative = path.relative_to(inbox)
            note(path, f"{'failed' if is_in_failed(PurePosixPath(relative)) else 'inbox'} {relative}")
    return places


def assert_in_one_place(data: bytes, inbox: Path, outbox: Path) -> str:
    """Nothing dropped is ever lost: the bytes lie in exactly one place (the project's rule)."""
    return assert_each_in_one_place([data], inbox, outbox)[0]


def assert_each_in_one_place(datas: list[bytes], inbox: Path, outbox: Path) -> list[str]:
    """``assert_in_one_place`` for many pictures (distinct bytes), in one walk; their places."""
    found = places_of(datas, inbox, outbox)
    astray = {data[:40]: places for data, places in found.items() if len(places) != 1}
    assert not astray, f"bytes not in exactly one place: {dict(list(astray.items())[:5])}"
    return [found[data][0] for data in datas]
