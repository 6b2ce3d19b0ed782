"""Is the inbox (or the outbox) still the folder recond started with?

A share that drops away leaves its bare mount point behind: an empty local folder at the same
path. Results published there lie hidden under the share once it is back, and an inbox seen
there looks emptied. So each folder has an identity: a marker file recond writes into it
(``.recond-folder``, a random id; hidden, and intake ignores hidden names), remembered in the
state dir with whether the folder was a mount point. A marker rather than the device and inode,
because a legitimate remount of the same NFS or SMB share gets a new device number and people
expect recond to carry on then; only where no marker can be written (a read-only inbox) do
device and inode stand in.

A folder recond did not start with is never taken silently (issues 18 and 27): a bare mount
point where a share was (asked of the kernel's mount table first, whatever markers lie under
it), a symlink in its place, or a folder holding another marker (another daemon's folder, or an
old local folder a share was mounted over) makes the queue or the intake wait with a sentence
naming what changed, until the folder is back or someone takes the new one: ``reconctl adopt``
(:func:`adopt`) or the ``adopt_changed_folders`` setting. A folder with no marker at all that is
no bare mount point (a local folder deleted and made again, a fresh share mounted over the
folder) is where people look, so it is taken, with a warning in the log.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
from pathlib import Path

from recond.logging import get_logger
from recond.shares import beneath

MARKER_NAME = ".recond-folder"

log = get_logger("recond.shares.folders")


def is_mount_point(folder: Path) -> bool:
    """Is something mounted on ``folder``? From the kernel's mount table, which also lists a
    bind mount within one filesystem (os.path.ismount compares devices and misses those)."""
    try:
        table = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return os.path.ismount(folder)
    # proc(5): the fifth field is the mount point, with space, tab, newline and \\ as octal escapes
    wanted = os.path.realpath(folder)
    points = (re.sub(r"\\([0-7]{3})", lambda code: chr(int(code[1], 8)), line.split(" ")[4])
              for line in table.splitlines() if line.count(" ") >= 4)
    return wanted in points


class FolderReplaced(OSError):
    """The folder at the configured path is not the one recond started with (the reason)."""


class FolderIdentity:
    """The identity of one share folder (``name``: "inbox" or "outbox"), checked on demand.

    ``adopt_any`` (the ``adopt_changed_folders`` setting) takes a changed folder with a warning
    instead of waiting for ``reconctl adopt``.
    """

    def __init__(self, name: str, folder: Path, state_dir: Path, adopt_any: bool = False) -> None:
        self.name, self.folder, self.adopt_any = name, folder, adopt_any
        self.remembered = state_dir / f"{name}.identity"
        self.expected: str | None = None  # the marker's id, or "device:inode" where none can be
        self.mount_point = False  # was the folder a mount point (a share) when it was adopted?

    def check(self) -> str | None:
        """None while the folder is the one recond knows (the first check after a start learns
        it, or finds it changed since the last run); else one sentence saying why not."""
        try:
            mode = os.lstat(self.folder).st_mode
        except OSError as error:
            return f"the {self.name} {self.folder} is unavailable ({error.strerror})"
        if stat.S_ISLNK(mode):
            return (f"the {self.name} {self.folder} has become a symlink; recond does not follow "
                    "it (make it a folder again)")
        if not stat.S_ISDIR(mode):
            return f"the {self.name} {self.folder} is not a folder"
        try:
            current = self._current()
        except OSError as error:
            return f"the {self.name} {self.folder} is unreadable ({error.strerror})"
        if self.expected is None:
            self._recall()
            current = self._current()
        changed = self._changed(current)
        if changed is None:
            return None
        if self._remembered_now(current):
            return None
        if self.adopt_any:
            log.warning(f"the {self.name} changed; taking it (adopt_changed_folders)",
                        folder=str(self.folder), change=changed)
            self._take(current)
            return None
        return (f"the {self.name} {self.folder} is not the folder recond started with: {changed}; "
                f"waiting until it is back (`reconctl adopt {self.name}` takes it as it is now)")

    def raise_if_replaced(self) -> None:
        problem = self.check()
        if problem:
            raise FolderReplaced(errno.ESTALE, problem)

    def _recall(self) -> None:
        """The first check after a start: the folder as the last run left it (the state dir
        remembers it), or, the first time, as it is now."""
        remembered = self._remembered_id()
        if remembered.get("id"):
            self.expected = str(remembered["id"])
            self.mount_point = bool(remembered.get("mount_point", False))
            return
        self._take(self._current())

    def _changed(self, current: str | None) -> str | None:
        """What changed since the folder was adopted, in words; None when nothing did. The mount
        point comes first: it never depends on the markers that lie under a share."""
        if self._bare_mount_point():
            return "a share was mounted here and is not now"
        if current == self.expected or (current is None and self.expected == self._device_inode()):
            return None
        if current is None:  # made again, or a fresh share mounted over it: where people look
            log.warning(f"the {self.name} is a new folder (no marker); taking it", folder=str(self.folder))
            self._take(current)
            return None
        return (f"it holds another folder's marker ({MARKER_NAME} {current[:8]}..., not "
                f"{(self.expected or '')[:8]}...): another recond's folder, or an old folder a "
                "share was mounted over")

    def _remembered_now(self, current: str | None) -> bool:
        """Does the state dir remember the folder as it is now? Only this daemon writes there
        (another part of it took the folder made again: intake and worker each check the inbox)
        and ``reconctl adopt``: then it is the one."""
        remembered = self._remembered_id()
        if current is None or remembered.get("id") != current:
            return False
        if remembered.get("adopted"):
            log.warning(f"the {self.name} was adopted as it is now (reconctl adopt); taking it",
                        folder=str(self.folder))
        self.expected, self.mount_point = current, bool(remembered.get("mount_point", False))
        return True

    def _take(self, current: str | None) -> None:
        """This folder, as it is now, is the one from now on (and after a restart)."""
        self.mount_point = is_mount_point(self.folder)
        identity = current or self._write_marker()
        if identity is None:  # read-only: device and inode stand in, for this run only
            self.expected = self._device_inode()
            return
        self.expected = identity
        self._remember(identity)

    def adopt(self) -> str:
        """Remember the folder as it is now (its marker, written if missing, and whether it is a
        mount point) as the one, marked as adopted: a daemon waiting on it takes it at its next
        check. Returns a sentence saying what was taken; raises FolderReplaced (no folder, or
        no marker can be written) or OSError (the state dir cannot remember it)."""
        try:
            mode = os.lstat(self.folder).st_mode
        except OSError as error:
            raise FolderReplaced(error.errno, f"the {self.name} {self.folder} is unavailable "
                                              f"({error.strerror})") from None
        if not stat.S_ISDIR(mode):
            raise FolderReplaced(errno.ENOTDIR, f"the {self.name} {self.folder} is not a folder "
                                                "(recond takes no symlink)")
        self.mount_point = is_mount_point(self.folder)
        marker = self._current() or self._write_marker()
        if marker is None:
            raise FolderReplaced(errno.EROFS, f"no marker can be written into the {self.name} "
                                 f"{self.folder} (read-only); recond takes it as it is at its next start")
        self._write_record(marker, adopted=True)
        where = "a mount point" if self.mount_point else "not a mount point"
        return (f"the {self.name} {self.folder} ({where}, marker {marker[:8]}...) is the "
                f"{self.name} from now on; a daemon waiting on it resumes within seconds")

    def _current(self) -> str | None:
        """The id in the folder's marker, or None without one (a symlink is no marker)."""
        with beneath.opened(beneath.open_root(self.folder)) as root:
            try:
                marker = beneath.open_beneath(root, MARKER_NAME, os.O_RDONLY | os.O_NONBLOCK)
            except FileNotFoundError:
                return None
            except beneath.LinkOnTheWay:  # a link is no marker
                return None
            with open(marker, encoding="ascii", errors="replace") as stream:
                return stream.read(100).strip() or None

    def _bare_mount_point(self) -> bool:
        """A share was mounted on the folder when it was adopted, and is not now."""
        return self.mount_point and not is_mount_point(self.folder)

    def _write_marker(self) -> str | None:
        """Write a new marker (atomically, never over another daemon's); None if read-only."""
        new = secrets.token_hex(16)
        staged = self.folder / f"{MARKER_NAME}.{new}.tmp"
        try:
            staged.write_text(new + "\n", encoding="ascii")
            try:
                os.link(staged, self.folder / MARKER_NAME)
            finally:
                staged.unlink()
        except FileExistsError:  # another daemon sharing the folder wrote it first
            return self._current()
        except OSError as error:
            if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return None
            raise
        return new

    def _remembered_id(self) -> dict[str, object]:
        try:
            remembered = json.loads(self.remembered.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(remembered, dict) or remembered.get("folder") != str(self.folder):
            return {}
        return remembered

    def _remember(self, identity: str) -> None:
        try:
            self._write_record(identity, adopted=False)
        except OSError:
            pass  # remembering is best effort: this run still checks against the marker

    def _write_record(self, identity: str, adopted: bool) -> None:
        record = {"folder": str(self.folder), "id": identity, "mount_point": self.mount_point,
                  "adopted": adopted}
        self.remembered.parent.mkdir(parents=True, exist_ok=True)
        staged = self.remembered.with_name(self.remembered.name + ".tmp")
        staged.write_text(json.dumps(record), encoding="utf-8")
        staged.replace(self.remembered)

    def _device_inode(self) -> str:
        try:
            status = os.stat(self.folder)
        except OSError:
            return "gone"
        return f"{status.st_dev}:{status.st_ino}"

