"""The inbox and outbox layout, in one place: result names, private staging folders, the
publishing rename that never overwrites, ``inbox/failed/`` with its ``.error.txt`` notes, and
tidying inbox subfolders that recond emptied.

Every other module asks this one where things go, so a rule (a folder name, the staging suffix,
how long a name may be) is written once (issue 10).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TypeVar

from recond.pipeline.record import read_record

# inbox/failed/ holds what could not be processed. When something that is not a folder holds
# that name (a user's file called "failed", a symlink), the second name is used instead.
FAILED_FOLDERS = ("failed", "failed-recond")
ERROR_NOTE_SUFFIX = ".error.txt"
STAGING_SUFFIX = ".partial"
NAME_MAX_BYTES = 255  # one path component on Linux filesystems (ext4, xfs, btrfs, SMB, NFS)
# Room left in a result name for the staging prefix "." and ".<owner>.partial" around it.
RESULT_NAME_MAX_BYTES = 200
# Room left in a failed/ name for "-job<id>" and ".error.txt".
FAILED_NAME_MAX_BYTES = NAME_MAX_BYTES - len(ERROR_NOTE_SUFFIX) - 16

T = TypeVar("T")


# Names.


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


# Renaming without overwriting.

_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1  # linux/fs.h; renameat2(2) since Linux 3.15, glibc wrapper since 2.28


def rename_no_replace(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` atomically, failing with FileExistsError when the target
    exists. A plain rename(2) silently replaces an empty folder or any file."""
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target),
                     _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # filesystem without the flag
            raise OSError(code, os.strerror(code), str(source), None, str(target))
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    os.rename(source, target)


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


def build_result(outbox: Path, result_name: str, owner: str, build: Callable[[Path], T]) -> tuple[T, Path]:
    """Run ``build(folder)`` in a staging folder, then publish it; returns (what build returned,
    the published folder). The one way a result reaches the outbox (worker and reconctl)."""
    with staging(outbox, result_name, owner) as folder:
        built = build(folder)
        return built, publish(folder, outbox, result_name)


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


def clean_staging(outbox: Path, owner: str) -> list[Path]:
    """Remove this owner's staging folders (left by a crash or a kill); others' are kept."""
    marker = f".{owner}-"
    removed: list[Path] = []
    try:
        entries = list(os.scandir(outbox))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(STAGING_SUFFIX) and marker in entry.name:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


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


# inbox/failed/.


def is_in_failed(relative: PurePosixPath) -> bool:
    """Is this inbox path inside one of the failed folders (never a job)?"""
    return len(relative.parts) > 1 and relative.parts[0] in FAILED_FOLDERS


def failed_folder(inbox: Path) -> Path:
    """inbox/failed/, created if needed; a real folder, never a symlink or a user's file."""
    for name in FAILED_FOLDERS:
        folder = inbox / name
        try:
            folder.mkdir()
        except FileExistsError:
            pass
        if stat.S_ISDIR(os.lstat(folder).st_mode):
            return folder
    raise NotADirectoryError(
        f"neither {inbox / FAILED_FOLDERS[0]} nor {inbox / FAILED_FOLDERS[1]} can be a folder; "
        "rename the files that hold those names")


def error_note(kept: Path) -> Path:
    """The ``<name>.error.txt`` beside a file in failed/."""
    return kept.with_name(kept.name + ERROR_NOTE_SUFFIX)


def move_to_failed(inbox: Path, source: str, job_id: int, reason: str) -> Path | None:
    """Move ``inbox/source`` into failed/ (a short, free name) with a note saying why.

    Returns where it now lies, or None when it was already gone.
    """
    original = inbox / source
    if not os.path.lexists(original):
        return None
    folder = failed_folder(inbox)
    # A readable, short name (the original, in full, is in the note and the job record).
    name = shorten(display_name(original.name), FAILED_NAME_MAX_BYTES)
    path = PurePosixPath(name)
    candidates = [name, f"{path.stem}-job{job_id}{path.suffix}"]
    for candidate in candidates + [free_name(candidates[1], lambda n: os.path.lexists(folder / n))]:
        target = folder / candidate
        try:
            rename_no_replace(original, target)
            break
        except FileExistsError:
            continue
    shown = display_name(source)
    error_note(target).write_text(
        f"recond could not process {shown} (job {job_id}, {time.strftime('%Y-%m-%d %H:%M:%S')}):\n\n"
        f"{reason}\n\nTo try again, move {display_name(target.name)} back into the inbox "
        f"(or run `reconctl retry {job_id}`).\n", encoding="utf-8")
    remove_emptied_folders(inbox, source)
    return target


def move_back_from_failed(inbox: Path, kept: Path, source: str) -> Path:
    """Put a file from failed/ back at its inbox path (or beside it, if that name is taken now)
    and remove its note; intake then sees it as a new file."""
    target = inbox / source
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        rename_no_replace(kept, target)
    except FileExistsError:
        target = target.with_name(free_name(kept.name, lambda n: os.path.lexists(target.parent / n)))
        rename_no_replace(kept, target)
    error_note(kept).unlink(missing_ok=True)
    return target


# Tidying the inbox.


def remove_emptied_folders(inbox: Path, source: str) -> None:
    """After a file left ``inbox/source``, remove its subfolders that are now empty (issue 8).

    rmdir refuses a folder with anything in it, so a folder where something new arrived stays;
    the inbox itself and failed/ always stay.
    """
    relative = PurePosixPath(source)
    for parent in list(relative.parents)[:-1]:  # deepest first, the inbox ('.') excluded
        if parent.as_posix() in FAILED_FOLDERS:
            return
        try:
            os.rmdir(inbox / parent)
        except OSError:
            return
