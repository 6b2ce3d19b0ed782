"""Publishing a result: a private staging folder, then one rename that never overwrites.

A result appears in the outbox complete or not at all: it is built under a hidden
``.<name>.<owner>.partial`` folder and renamed into place (renameat2 RENAME_NOREPLACE), its
permissions bounded by the source picture's. The outbox's other readers (the daemon at a
restart, the intake's duplicate check) find published results here too.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from recond.names import free_name
from recond.pipeline.record import read_record
from recond.shares import beneath

STAGING_SUFFIX = ".partial"

T = TypeVar("T")


# Renaming without overwriting.

_AT_FDCWD = -100  # fcntl.h: a path, not a name inside a folder descriptor


def rename_no_replace(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` atomically, failing with FileExistsError when the target
    exists. A plain rename(2) silently replaces an empty folder or any file."""
    beneath.rename_no_replace(_AT_FDCWD, str(source), _AT_FDCWD, str(target))


# Staging and publishing results.


def owner_tag(identity: str) -> str:
    """A short tag naming one daemon (host + state dir): its staging folders carry it, so two
    daemons sharing an outbox never touch each other's, and a restart finds its own leftovers."""
    return hashlib.sha256(f"{socket.gethostname()}:{identity}".encode()).hexdigest()[:10]


def staging_dir(outbox: Path, result_name: str, owner: str) -> Path:
    """``.<result_name>.<owner>.partial``: hidden, and unique per daemon and job."""
    return outbox / f".{result_name}.{owner}{STAGING_SUFFIX}"


@contextmanager
def staging(outbox: Path, result_name: str, owner: str) -> Iterator[Path]:
    """A fresh, empty private folder to build a result in; removed again if anything fails."""
    folder = staging_dir(outbox, result_name, owner)
    shutil.rmtree(folder, ignore_errors=True)  # our own leftover from a crash
    outbox.mkdir(parents=True, exist_ok=True)
    folder.mkdir()
    try:
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def publish(staged: Path, outbox: Path, result_name: str) -> Path:
    """Rename a complete staging folder to ``result_name`` (or the first free ``-N`` variant):
    the result appears in one step, and an existing folder is never replaced."""
    while True:
        name = free_name(result_name, lambda candidate: os.path.lexists(outbox / candidate))
        try:
            rename_no_replace(staged, outbox / name)
        except FileExistsError:
            continue  # another daemon took the name between our look and our rename
        sync_directory(outbox)
        return outbox / name


def build_result(outbox: Path, result_name: str, owner: str, build: Callable[[Path], T],
                 source_mode: int = 0o777, before_publish: Callable[[], None] = lambda: None
                 ) -> tuple[T, Path]:
    """Run ``build(folder)`` in a staging folder, then publish it; returns (what build returned,
    the published folder). With ``publish_result``, the one way a result reaches the outbox
    (reconctl process builds here; the worker's host parts fill a ``staging`` folder elsewhere).

    The result grants no more than its source file did (``source_mode``: a 0600 picture gives
    a 0700 folder of 0600 files), and ``before_publish`` may still stop the publishing (e.g.
    the outbox is no longer the folder recond started with).
    """
    with staging(outbox, result_name, owner) as folder:
        built = build(folder)
        return built, publish_result(folder, outbox, result_name, source_mode, before_publish)


def publish_result(staged: Path, outbox: Path, result_name: str, source_mode: int = 0o777,
                   before_publish: Callable[[], None] = lambda: None) -> Path:
    """Publish a complete staging folder as ``build_result`` does: its permissions bounded by
    the source's, ``before_publish`` given the last word (the worker, whose host parts fill
    staging folders in other processes, calls this itself)."""
    restrict_to(staged, source_mode)
    before_publish()
    return publish(staged, outbox, result_name)


def restrict_to(folder: Path, source_mode: int) -> None:
    """Mask the permission bits of ``folder`` and everything in it by those of the source file
    (folders get x where the source has r, so what may be read may be listed)."""
    files = source_mode & 0o666
    folders = files | (files & 0o444) >> 2
    for root, names, file_names in os.walk(folder):
        for name in file_names:
            path = os.path.join(root, name)
            os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) & files, follow_symlinks=False)
        for name in [*names, ""]:
            path = os.path.join(root, name) if name else root
            os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) & folders)


def find_published(outbox: Path, result_name: str, sha256: str) -> Path | None:
    """A published result of these bytes under ``result_name`` or a ``-N`` variant of it (how
    a restart recognises a job whose result was renamed into place just before a crash)."""
    pattern = re.compile(re.escape(result_name) + r"(-\d+)?")
    try:
        names = sorted(entry.name for entry in os.scandir(outbox) if pattern.fullmatch(entry.name))
    except OSError:
        return None
    for name in names:
        if read_record(outbox / name).get("sha256") == sha256:
            return outbox / name
    return None


def published_results(outbox: Path) -> Iterator[tuple[str, str, str]]:
    """(source name, sha256, folder) of each published result whose job.json names its bytes:
    what a new job database learns from the outbox (issue 18)."""
    try:
        entries = sorted(os.scandir(outbox), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        record = read_record(entry.path)
        if isinstance(record.get("sha256"), str) and isinstance(record.get("source"), str):
            yield record["source"], record["sha256"], str(Path(entry.path))


def result_holds(result_dir: str | Path | None, sha256: str) -> bool:
    """Does this published result still hold these bytes as its ``source.*`` copy? Only then may
    an inbox copy of them be removed as a duplicate."""
    if not result_dir:
        return False
    folder = Path(result_dir)
    record = read_record(folder)
    try:
        with (folder / record["source_copy"]).open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return record.get("sha256") == sha256 == digest


def sync_directory(path: Path) -> None:
    """Make a rename durable, so a power cut cannot bring back the staging name."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
