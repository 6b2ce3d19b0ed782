"""The inbox and outbox layout, in one place: result names, private staging folders, the
publishing rename that never overwrites, ``inbox/failed/`` with its ``.error.txt`` notes, and
tidying inbox subfolders that recond emptied.

Every other module asks this one where things go, so a rule (a folder name, the staging suffix,
how long a name may be) is written once (issue 10).
"""

from __future__ import annotations

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

from recond import beneath, dropped
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


def process_owner(pid: int) -> str:
    """The owner tag of a ``reconctl process`` run: this host's tag and the run's pid, so a
    later start on this host can tell the staging folders of a killed run (its pid is gone)."""
    return f"{owner_tag(_PROCESS_RUNS)}.pid{pid}"


_PROCESS_RUNS = "reconctl process"
_PROCESS_STAGING = re.compile(r"\.(?P<owner>[0-9a-f]{10})\.pid(?P<pid>\d+)-\d+" + re.escape(STAGING_SUFFIX))


def clean_staging(outbox: Path, owner: str) -> list[Path]:
    """Remove this owner's staging folders (left by a crash or a kill) and those of killed
    ``reconctl process`` runs on this host; others' are kept."""
    marker = f".{owner}-"
    removed: list[Path] = []
    try:
        entries = list(os.scandir(outbox))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(STAGING_SUFFIX)):
            continue
        run = _PROCESS_STAGING.search(entry.name)
        dead_run = (run is not None and run["owner"] == owner_tag(_PROCESS_RUNS)
                    and not pid_alive(int(run["pid"])))
        if marker in entry.name or dead_run:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def pid_alive(pid: int | None) -> bool:
    """True when a process with this id exists (a stale heartbeat, a killed process run)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    Every step goes through folder descriptors (recond.beneath): a subfolder swapped for a
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
