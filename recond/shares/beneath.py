"""Opening, renaming and removing things under a folder (the inbox) without ever leaving it.

Whoever may write to the share decides what a name under the inbox is, and may change it at
any moment: a subfolder can become a symlink to a private folder between recond's check and
its use. So every step below the inbox starts from a descriptor of the inbox itself and follows
no link in any component: ``openat2`` with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS where the
kernel has it (Linux 5.6+), else a walk of O_NOFOLLOW | O_DIRECTORY descriptors; renames and
removals then act on one name inside a descriptor of its folder (issue 18).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

# linux/openat2.h; openat2 is syscall 437 on every architecture (asm-generic/unistd.h, 5.6)
_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x02, 0x04, 0x08
_SYS_OPENAT2 = 437
_RENAME_NOREPLACE = 1  # linux/fs.h; renameat2(2) since Linux 3.15, glibc wrapper since 2.28
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class LinkOnTheWay(OSError):
    """The path leads through a symlink (or names one, or uses '..'): recond does not follow it."""


_openat2_works = True  # until the kernel (or a seccomp filter) says it has no openat2


def parts_of(relative: str) -> list[str]:
    """The components of a path below the folder; an absolute path or '..' is refused."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise LinkOnTheWay(errno.EXDEV, f"{relative} does not lie below the folder")
    return list(path.parts)


def open_root(folder: Path) -> int:
    """A descriptor of the folder itself, which must be a real folder, not a symlink to one."""
    try:
        return os.open(folder, FOLDER_FLAGS)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise LinkOnTheWay(errno.ELOOP, f"{folder} is a symlink") from None
        raise


def open_beneath(root: int, relative: str, flags: int, mode: int = 0o666) -> int:
    """``os.open`` of ``relative`` below the folder ``root``, following no link on the way."""
    parts = parts_of(relative)
    global _openat2_works
    if _openat2_works:
        # RESOLVE_NO_SYMLINKS refuses a link at the last step too (ELOOP); O_NOFOLLOW with
        # O_DIRECTORY would answer ENOTDIR for a link there, hiding that it is one.
        how = _OpenHow((flags | os.O_CLOEXEC) & ~os.O_NOFOLLOW, mode if flags & os.O_CREAT else 0,
                       _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
        descriptor = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(root),
                                   ctypes.c_char_p(os.fsencode("/".join(parts))),
                                   ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if descriptor >= 0:
            return int(descriptor)
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter without openat2
            raise _error(code, relative)
        _openat2_works = False
    return _walk(root, parts, flags, mode, relative)


def _walk(root: int, parts: list[str], flags: int, mode: int, relative: str) -> int:
    folder = os.dup(root)
    try:
        for part in parts[:-1]:
            inner = _open_step(folder, part, FOLDER_FLAGS, 0, relative)
            os.close(folder)
            folder = inner
        return _open_step(folder, parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, relative)
    finally:
        os.close(folder)


def _open_step(folder: int, name: str, flags: int, mode: int, relative: str) -> int:
    try:
        return os.open(name, flags, mode, dir_fd=folder)
    except OSError as error:
        code = error.errno
    if code == errno.ENOTDIR and _is_link(folder, name):  # O_NOFOLLOW|O_DIRECTORY on a link
        code = errno.ELOOP
    raise _error(code, relative)


def _is_link(folder: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _error(code: int | None, relative: str) -> OSError:
    if code in (errno.ELOOP, errno.EXDEV):  # a symlink met / a step that would leave the folder
        return LinkOnTheWay(code, f"{relative} leads through a symlink", relative)
    code = code or errno.EIO
    return OSError(code, os.strerror(code), relative)


@contextmanager
def opened(descriptor: int) -> Iterator[int]:
    try:
        yield descriptor
    finally:
        os.close(descriptor)


def open_folder(root: int, relative: str, create: bool = False) -> int:
    """A descriptor of the folder ``relative`` below ``root`` ('' or '.' is ``root`` itself);
    with ``create``, missing folders on the way are made (never through a link)."""
    parts = [part for part in PurePosixPath(relative).parts if part != "."]
    if not parts:
        return os.dup(root)
    if not create:
        return open_beneath(root, "/".join(parts), FOLDER_FLAGS)
    folder = os.dup(root)
    for part in parts:
        with opened(folder):
            try:
                os.mkdir(part, dir_fd=folder)
            except FileExistsError:
                pass
            folder = open_beneath(folder, part, FOLDER_FLAGS)
    return folder


@contextmanager
def parent_of(root: int, relative: str, create: bool = False) -> Iterator[tuple[int, str]]:
    """(a descriptor of the folder holding ``relative``, its last name), closed afterwards."""
    parts = parts_of(relative)
    with opened(open_folder(root, "/".join(parts[:-1]), create)) as folder:
        yield folder, parts[-1]


def exists(folder: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def rename_no_replace(source_folder: int, source: str, target_folder: int, target: str) -> None:
    """Rename one name to another, each inside a folder descriptor, atomically, failing with
    FileExistsError when the target exists (a plain rename replaces an empty folder or a file)."""
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is not None:
        if renameat2(source_folder, os.fsencode(source), target_folder, os.fsencode(target),
                     _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # filesystem without the flag
            raise OSError(code, os.strerror(code), source, None, target)
    if exists(target_folder, target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target)
    os.rename(source, target, src_dir_fd=source_folder, dst_dir_fd=target_folder)
