"""``inbox/failed/``: pictures that could not be processed, each beside an ``.error.txt`` note,
and tidying the inbox subfolders that recond emptied.

Every move goes through folder descriptors under the inbox (shares.beneath), so a link put in
the way by someone on the share never takes a picture out of the inbox.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from recond.inbox import dropped
from recond.names import FAILED_FOLDERS, NAME_MAX_BYTES, display_name, free_name, shorten
from recond.shares import beneath

ERROR_NOTE_SUFFIX = ".error.txt"
# Room left in a failed/ name for "-job<id>" and ".error.txt".
FAILED_NAME_MAX_BYTES = NAME_MAX_BYTES - len(ERROR_NOTE_SUFFIX) - 16


def is_in_failed(relative: PurePosixPath) -> bool:
    """Is this inbox path inside one of the failed folders (never a job)?"""
    return len(relative.parts) > 1 and relative.parts[0] in FAILED_FOLDERS


def failed_folder(root: int) -> str:
    """The name of inbox/failed/ (given a descriptor of the inbox), created if needed; a real
    folder, never a symlink or a user's file."""
    for name in FAILED_FOLDERS:
        try:
            os.mkdir(name, dir_fd=root)
        except FileExistsError:
            pass
        try:
            os.close(beneath.open_beneath(root, name, beneath.FOLDER_FLAGS))
        except OSError:  # a link (ELOOP) or a file (ENOTDIR) holds the name: the next one
            continue
        return name
    raise NotADirectoryError(
        f"neither {FAILED_FOLDERS[0]} nor {FAILED_FOLDERS[1]} in the inbox can be a folder; "
        "rename the files that hold those names")


def error_note(kept: Path) -> Path:
    """The ``<name>.error.txt`` beside a file in failed/."""
    return kept.with_name(kept.name + ERROR_NOTE_SUFFIX)


def _failed_names(source: str, job_id: int, taken: Callable[[str], bool]) -> Iterator[str]:
    """The names a file gets in failed/, in the order tried: its own (short) name, then with
    the job's number, then ``-2``, ``-3`` ... variants of that, up to the first one not taken."""
    name = shorten(display_name(PurePosixPath(source).name), FAILED_NAME_MAX_BYTES)
    path = PurePosixPath(name)
    numbered = f"{path.stem}-job{job_id}{path.suffix}"
    yield name
    candidate, number = numbered, 1
    while True:
        yield candidate
        if not taken(candidate):
            return
        number += 1
        candidate = f"{numbered}-{number}"


def move_to_failed(inbox: Path, source: str, job_id: int, reason: str) -> Path | None:
    """Move ``inbox/source`` into failed/ (a short, free name) with a note saying why.

    Every step goes through folder descriptors (recond.shares.beneath): a subfolder swapped for a
    symlink moves nothing from outside the inbox (LinkOnTheWay). The note is written first, so
    a kill between the two steps never leaves a file in failed/ without its note. Returns where
    the file now lies, or None when it was already gone.
    """
    with beneath.opened(beneath.open_root(inbox)) as root, \
            beneath.parent_of(root, source) as (folder, name):
        if not beneath.exists(folder, name):
            return None
        failed = failed_folder(root)
        with beneath.opened(beneath.open_folder(root, failed)) as kept_in:
            for candidate in _failed_names(source, job_id, lambda n: beneath.exists(kept_in, n)):
                if beneath.exists(kept_in, candidate):
                    continue
                _write_note(kept_in, candidate, source, job_id, reason)
                try:
                    beneath.rename_no_replace(folder, name, kept_in, candidate)
                    break
                except FileExistsError:  # taken between our look and our rename
                    os.unlink(candidate + ERROR_NOTE_SUFFIX, dir_fd=kept_in)
            else:
                raise FileExistsError(errno.EEXIST, "no free name in failed/", source)
    remove_emptied_folders(inbox, source)
    return inbox / failed / candidate


def _write_note(folder: int, kept: str, source: str, job_id: int, reason: str) -> None:
    note = (f"recond could not process {display_name(source)} (job {job_id}, "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}):\n\n{reason}\n\nTo try again, move "
            f"{display_name(kept)} back into the inbox (or run `reconctl retry {job_id}`).\n")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(os.open(kept + ERROR_NOTE_SUFFIX, flags, 0o666, dir_fd=folder), "w",
              encoding="utf-8") as stream:
        stream.write(note)


def find_in_failed(inbox: Path, source: str, job_id: int, sha256: str, size: int) -> Path | None:
    """The file of this job in failed/, found by the names move_to_failed gives and by its
    bytes: a kill between the move and its record leaves the record without it (issue 18)."""
    if not sha256:
        return None
    for failed in FAILED_FOLDERS:
        try:
            with beneath.opened(beneath.open_root(inbox)) as root, \
                    beneath.opened(beneath.open_folder(root, failed)) as folder:
                names = list(_failed_names(source, job_id, lambda n: beneath.exists(folder, n)))
        except OSError:
            continue
        for name in names:
            if dropped.holds(inbox, f"{failed}/{name}", sha256, size):
                return inbox / failed / name
    return None


def move_back_from_failed(inbox: Path, kept: Path, source: str) -> Path:
    """Put a file from failed/ back at its inbox path (or beside it, if that name is taken now)
    and remove its note; intake then sees it as a new file. Through folder descriptors only:
    a folder on the way swapped for a link writes nothing outside the inbox."""
    relative = PurePosixPath(kept).as_posix().removeprefix(f"{inbox}/")
    if not is_in_failed(PurePosixPath(relative)):
        raise beneath.LinkOnTheWay(errno.EXDEV, f"{kept} is not in the inbox's failed folder")
    with beneath.opened(beneath.open_root(inbox)) as root, \
            beneath.parent_of(root, relative) as (kept_in, kept_name), \
            beneath.parent_of(root, source, create=True) as (folder, name):
        target = name
        while True:
            try:
                beneath.rename_no_replace(kept_in, kept_name, folder, target)
                break
            except FileExistsError:
                target = free_name(kept_name, lambda n: beneath.exists(folder, n))
        try:
            os.unlink(kept_name + ERROR_NOTE_SUFFIX, dir_fd=kept_in)
        except FileNotFoundError:
            pass
    return inbox / PurePosixPath(source).parent / target


# Tidying the inbox.


def remove_emptied_folders(inbox: Path, source: str) -> None:
    """After a file left ``inbox/source``, remove its subfolders that are now empty (issue 8).

    rmdir refuses a folder with anything in it, so a folder where something new arrived stays;
    the inbox itself and failed/ always stay. Each folder is removed by its name inside a
    descriptor of its parent, so a folder on the way swapped for a link removes nothing.
    """
    relative = PurePosixPath(source)
    try:
        root = beneath.open_root(inbox)
    except OSError:
        return
    with beneath.opened(root):
        for parent in list(relative.parents)[:-1]:  # deepest first, the inbox ('.') excluded
            if parent.as_posix() in FAILED_FOLDERS:
                return
            try:
                with beneath.parent_of(root, parent.as_posix()) as (folder, name):
                    os.rmdir(name, dir_fd=folder)
            except OSError:
                return
