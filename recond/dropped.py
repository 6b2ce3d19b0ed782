"""Opening a file someone dropped into the inbox without trusting its path.

Anyone with write access to the share decides what a name in the inbox is: a FIFO that would
block ``open()`` forever, a link to ``/dev/zero`` or ``/etc/shadow``, a subfolder swapped for a
symlink. So a dropped file is opened without following links and without blocking, checked to
be a regular file on the open descriptor itself, and read in bounded blocks (issue 11).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from pathlib import Path

BLOCK_BYTES = 1 << 20
READ_SECONDS = 120.0  # a read slower than this (a hung share) is given up and tried again later

FILE, LINK, OTHER = "file", "link", "other"


class NotARegularFile(OSError):
    """The name is a FIFO, socket, device, folder or symlink: recond never reads those."""


def kind(path: Path) -> str | None:
    """FILE, LINK or OTHER (FIFO, socket, device, folder) without following the name; None if gone."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return FILE
    return LINK if stat.S_ISLNK(mode) else OTHER


def link_target_inside(path: Path, inbox: Path) -> Path | None:
    """Where a symlink in the inbox leads, if that is a regular file inside the inbox."""
    target = Path(os.path.realpath(path))
    if inbox not in target.parents or kind(target) != FILE:
        return None
    return target


def open_regular(path: Path, inbox: Path) -> int:
    """A read-only descriptor of ``path``, which must be a regular file reached from ``inbox``
    through real folders only (no symlink anywhere on the way). Never blocks on a FIFO."""
    if Path(os.path.realpath(path.parent)) != Path(os.path.abspath(path.parent)):
        raise NotARegularFile(f"{path.parent} leads through a symlink")
    if inbox != path.parent and inbox not in path.parents:
        raise NotARegularFile(f"{path} is not inside {inbox}")
    return _open_file(path)


def _open_file(path: Path) -> int:
    """A read-only descriptor of the regular file named ``path``: a symlink at the last step is
    refused, not followed, and a FIFO is opened without blocking, then refused."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise NotARegularFile(f"{path.name} is a symlink") from None
        raise
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise NotARegularFile(f"{path.name} is not a regular file")
    return descriptor


def fingerprint(path: Path, inbox: Path) -> tuple[str, int]:
    """(sha256, size) of a dropped file, read in blocks (memory bounded) within READ_SECONDS."""
    descriptor = open_regular(path, inbox)
    digest, size = hashlib.sha256(), 0
    deadline = time.monotonic() + READ_SECONDS
    try:
        while block := os.read(descriptor, BLOCK_BYTES):
            digest.update(block)
            size += len(block)
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {path.name} took over {READ_SECONDS:.0f} s")
    finally:
        os.close(descriptor)
    return digest.hexdigest(), size


def read_bounded(path: Path, max_bytes: int) -> tuple[int, bytes]:
    """(size, bytes) of a regular file, its bytes only when ``size <= max_bytes``; never follows
    a link at the last step and never blocks on a FIFO."""
    descriptor = _open_file(path)
    try:
        size = os.fstat(descriptor).st_size
        if size > max_bytes:
            return size, b""
        chunks, total = [], 0
        while total <= max_bytes and (block := os.read(descriptor, BLOCK_BYTES)):
            chunks.append(block)
            total += len(block)
        data = b"".join(chunks)
        return len(data), data
    finally:
        os.close(descriptor)


def holds(path: Path, inbox: Path, sha256: str) -> bool:
    """Does ``path`` still hold exactly these bytes? (False when gone or unreadable.)"""
    try:
        return fingerprint(path, inbox)[0] == sha256
    except OSError:
        return False


def remove_if_holds(path: Path, inbox: Path, sha256: str) -> bool:
    """Remove ``path`` only while it holds these bytes (their copy is safe elsewhere)."""
    if not holds(path, inbox, sha256):
        return False
    path.unlink()
    return True
