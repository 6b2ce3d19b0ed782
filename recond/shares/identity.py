"""Is the inbox (or the outbox) still the folder recond started with?

A share that drops away leaves its bare mount point behind: an empty local folder at the same
path. Results published there lie hidden under the share once it is back, and an inbox seen
there looks emptied. So each folder has an identity: a marker file recond writes into it
(``.recond-folder``, a random id; hidden, and intake ignores hidden names), remembered in the
state dir. A marker rather than the device and inode, because a legitimate remount of the same
NFS or SMB share gets a new device number and people expect recond to carry on then; only where
no marker can be written (a read-only inbox) do device and inode stand in.

A bare mount point (a share was mounted on the folder and is not now) or a symlink in its place
is not the folder: the queue or the intake waits, says why, and resumes when the folder is back
(issue 18). A local folder deleted and made again is taken as the new one (what is published
there stays in sight), and so is a share mounted later over a local folder; a bare mount point
never is, not even after a restart.
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
    """The identity of one share folder (``name``: "inbox" or "outbox"), checked on demand."""

    def __init__(self, name: str, folder: Path, state_dir: Path) -> None:
        self.name, self.folder = name, folder
        self.remembered = state_dir / f"{name}.identity"
        self.expected: str | None = None  # the marker's id, or "device:inode" where none can be
        self.mount_point = False  # was the folder a mount point (a share) when it was adopted?

    def check(self) -> str | None:
        """None while the folder is the one recond knows (the first check learns it); else
        one sentence saying why not."""
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
            self.expected = self._adopt(current)
            current = self._current() or current
        if current == self.expected or (current is None and self.expected == self._device_inode()):
            return None
        if current is None and self._bare_mount_point():
            return (f"the {self.name} {self.folder} is not the folder recond started with (a "
                    "share was mounted here and is not now); waiting until it is back")
        # A local folder made again, a share mounted over a local folder, or a marker another
        # part of recond (or another daemon sharing the folder) wrote there first: all in sight.
        log.info(f"the {self.name} is a new folder; taking it", folder=str(self.folder))
        self.expected = self._adopt(current)
        return None

    def raise_if_replaced(self) -> None:
        problem = self.check()
        if problem:
            raise FolderReplaced(errno.ESTALE, problem)

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

    def _adopt(self, current: str | None) -> str:
        """What this folder's identity is from now on, at the first check after a start."""
        remembered = self._remembered_id()
        if self.expected is None:  # the first check after a start: the state dir remembers
            self.mount_point = bool(remembered.get("mount_point", False))
        if current is None and self._bare_mount_point():
            return str(remembered.get("id") or self.expected or "")  # never taken for the share
        self.mount_point = is_mount_point(self.folder)
        identity = current or self._write_marker()
        if identity is None:  # read-only: device and inode stand in, for this run only
            return self._device_inode()
        self._remember(identity)
        return identity

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
        record = {"folder": str(self.folder), "id": identity, "mount_point": self.mount_point}
        try:
            self.remembered.parent.mkdir(parents=True, exist_ok=True)
            staged = self.remembered.with_name(self.remembered.name + ".tmp")
            staged.write_text(json.dumps(record), encoding="utf-8")
            staged.replace(self.remembered)
        except OSError:
            pass  # remembering is best effort: this run still checks against the marker

    def _device_inode(self) -> str:
        try:
            status = os.stat(self.folder)
        except OSError:
            return "gone"
        return f"{status.st_dev}:{status.st_ino}"
