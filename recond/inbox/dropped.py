"""Opening a file someone dropped into the inbox without trusting its path.

Anyone with write access to the share decides what a name in the inbox is: a FIFO that would
block ``open()`` forever, a link to ``/dev/zero`` or ``/etc/shadow``, a subfolder swapped for a
symlink. So a dropped file is named by its path below the inbox and opened through
``recond.shares.beneath`` (no link followed in any component), without blocking, checked to be a regular
file on the open descriptor itself, refused by its size before a byte is read, and read in
bounded blocks (issues 11, 18). What is checked, hashed and handed on comes from that one
descriptor: nothing reopens the file by its path.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from recond.errors import InputError
from recond.pipeline.contract import SourcePicture
from recond.pipeline.image import check_size
from recond.shares import beneath

BLOCK_BYTES = 1 << 20
READ_SECONDS = 120.0  # a file read slower than this is set aside: it would hold up all the others
FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY  # O_NONBLOCK: a FIFO never blocks the open

FILE, LINK, OTHER = "file", "link", "other"


class NotARegularFile(OSError):
    """The name is a FIFO, socket, device, folder or symlink: recond never reads those."""


class TooLarge(OSError):
    """The file is over max_file_bytes: refused from its size alone, not a byte read."""

    def __init__(self, relative: str, size: int, max_bytes: int) -> None:
        super().__init__(f"{PurePosixPath(relative).name} is {size / 1e6:.1f} MB, over the "
                         f"{max_bytes / 1e6:.1f} MB limit (setting max_file_bytes)")
        self.size = size


@dataclass(frozen=True)
class Dropped:
    """One read of a dropped file: its bytes (when asked for), their sha256, and the file's
    size, modification time and permission bits, all from the one descriptor it was read by."""

    sha256: str
    size: int
    mtime_ns: int
    mode: int
    data: bytes = b""


def kind(inbox: Path, relative: str) -> str | None:
    """FILE, LINK or OTHER (FIFO, socket, device, folder) of a name below the inbox, following
    nothing (a folder on the way that became a link makes it a LINK); None if gone."""
    try:
        with beneath.opened(beneath.open_root(inbox)) as root, \
                beneath.parent_of(root, relative) as (folder, name):
            mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
    except beneath.LinkOnTheWay:
        return LINK
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISREG(mode):
        return FILE
    return LINK if stat.S_ISLNK(mode) else OTHER


def link_target_inside(inbox: Path, relative: str) -> str | None:
    """Where a symlink in the inbox leads, below the inbox, if that is a regular file there
    (``follow_inbox_links``); the target is then opened beneath the inbox like any file."""
    target = Path(os.path.realpath(inbox / relative))
    if inbox not in target.parents:
        return None
    inside = target.relative_to(inbox).as_posix()
    return inside if kind(inbox, inside) == FILE else None


def open_dropped(inbox: Path, relative: str) -> int:
    """A read-only descriptor of the regular file ``relative`` below ``inbox``, reached through
    real folders only (no symlink anywhere on the way). Never blocks on a FIFO."""
    with beneath.opened(beneath.open_root(inbox)) as root:
        try:
            descriptor = beneath.open_beneath(root, relative, FILE_FLAGS)
        except beneath.LinkOnTheWay as error:
            raise NotARegularFile(f"{relative} is a symlink or {error.strerror}") from None
    return _regular(descriptor, relative)


def _regular(descriptor: int, name: str) -> int:
    """The descriptor, if it is of a regular file (else closed, and NotARegularFile)."""
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise NotARegularFile(f"{PurePosixPath(name).name} is not a regular file")
    return descriptor


def status(inbox: Path, relative: str) -> os.stat_result:
    """fstat of the dropped file, opened as above (what intake watches settle)."""
    with beneath.opened(open_dropped(inbox, relative)) as descriptor:
        return os.fstat(descriptor)


def read(inbox: Path, relative: str, max_bytes: int, keep: bool = False) -> Dropped:
    """Hash (and with ``keep``, return) the bytes of a dropped file, read once from one
    descriptor: over ``max_bytes`` it is refused from fstat (TooLarge) before any read, and a
    read slower than READ_SECONDS is given up (TimeoutError), so no file holds up the others."""
    with beneath.opened(open_dropped(inbox, relative)) as descriptor:
        return read_descriptor(descriptor, relative, max_bytes, keep)


def read_named(path: Path, max_bytes: int) -> Dropped:
    """The same one read, with its bytes, of a file named on a command line (``reconctl
    process``): a FIFO is refused without blocking."""
    descriptor = _regular(os.open(path, FILE_FLAGS | os.O_CLOEXEC), path.name)
    with beneath.opened(descriptor):
        return read_descriptor(descriptor, path.name, max_bytes, keep=True)


def read_descriptor(descriptor: int, name: str, max_bytes: int, keep: bool) -> Dropped:
    before = os.fstat(descriptor)
    if before.st_size > max_bytes:
        raise TooLarge(name, before.st_size, max_bytes)
    digest, chunks, size = hashlib.sha256(), [], 0
    deadline = time.monotonic() + READ_SECONDS
    while size <= max_bytes and (block := os.read(descriptor, BLOCK_BYTES)):
        if size and time.monotonic() > deadline:  # a further block, and time is up
            raise TimeoutError(f"reading {PurePosixPath(name).name} took over {READ_SECONDS:g} s "
                               f"({size / 1e6:.1f} MB read)")
        digest.update(block)
        size += len(block)
        if keep:
            chunks.append(block)
    if size > max_bytes:  # it grew past the limit while we read it
        raise TooLarge(name, size, max_bytes)
    after = os.fstat(descriptor)
    return Dropped(digest.hexdigest(), size, after.st_mtime_ns, stat.S_IMODE(after.st_mode),
                   b"".join(chunks))


def holds(inbox: Path, relative: str, sha256: str, size: int) -> bool:
    """Does ``relative`` still hold exactly these ``size`` bytes? (False when gone, unreadable
    or of another size: a larger file is not read at all.)"""
    try:
        return read(inbox, relative, max_bytes=size).sha256 == sha256
    except OSError:
        return False


def remove_if_holds(inbox: Path, relative: str, sha256: str, size: int,
                    readable: str | None = None) -> bool:
    """Remove ``relative`` only while the file it names (for a followed link: ``readable``, its
    target) holds these bytes: their copy is safe elsewhere. The name is removed from a
    descriptor of its own folder, so a folder swapped for a link removes nothing outside."""
    if not holds(inbox, readable or relative, sha256, size):
        return False
    with beneath.opened(beneath.open_root(inbox)) as root, \
            beneath.parent_of(root, relative) as (folder, name):
        os.unlink(name, dir_fd=folder)
    return True


def read_source(path: Path, max_bytes: int) -> SourcePicture:
    """A picture named on a command line (``reconctl process``), read once: a FIFO is refused
    without blocking, and a file over ``max_bytes`` from its size, before any read (issue 11)."""
    try:
        read = read_named(path, max_bytes)
    except TooLarge as error:
        raise InputError(str(error)) from None
    except NotARegularFile as error:
        raise InputError(f"cannot read {path.name}: {error}") from None
    except OSError as error:
        raise InputError(f"cannot read {path.name}: {error.strerror}") from None
    check_size(path.name, read.size, max_bytes)
    return SourcePicture(path.name, read.data, read.mode)
