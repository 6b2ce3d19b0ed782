"""Who works on an inbox: one daemon at a time, named by a lease file in the inbox itself.

Two daemons with two state dirs on one inbox (two machines on one NAS share) each queued every
picture and published it twice (issue 27). The state dir's flock cannot see a daemon with
another state dir, and flock on SMB cannot be trusted, so the inbox holds ``.recond-lease``
(hidden: intake ignores it): JSON naming the holder (host, pid, state dir), rewritten every
REFRESH_SECONDS by a thread of the holder through a temporary file and a rename, which is atomic
on local disks, NFS and SMB alike. Another daemon that finds the lease refreshed refuses to start
and names the holder. A lease nobody refreshes for LEASE_SECONDS (its holder was killed, its
machine is gone) is taken over, after one more look that it really stands still, so a holder
whose clock runs behind is not mistaken for a dead one. On this host a holder whose pid is gone,
or one with our own state dir (whose lock we hold), is dead at once. A clean stop removes it.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from recond.logging import Repeats, get_logger

LEASE_NAME = ".recond-lease"
REFRESH_SECONDS = 5.0  # the daemon's heartbeat period (store.HEARTBEAT_SECONDS)
# A lease is refreshed by a thread of its own, so a daemon whose main loop waits (on the database,
# on a slow share) keeps it; it goes stale only when its holder is gone or frozen, or has not
# reached the inbox for this long (twelve refreshes).
LEASE_SECONDS = 60.0
ACQUIRE_TRIES = 5  # a lease changing under each try means another daemon is starting too
STILL_SECONDS = REFRESH_SECONDS + 1.0  # a stale-looking lease is watched this long before it is taken

log = get_logger("recond.shares.lease")


class InboxTaken(RuntimeError):
    """Another daemon holds the inbox's lease (the message names it and says what to do)."""


class LeaseLost(OSError):
    """This daemon's lease was taken over (or cannot be read now): it publishes nothing."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    state_dir: str
    token: str  # random, one per daemon run: tells two runs with the same state dir apart
    refreshed_at: float  # the holder's wall clock

    def described(self) -> str:
        return f"host {self.host}, pid {self.pid}, state dir {self.state_dir}"


class InboxLease:
    """This daemon's lease on ``inbox``: ``acquire()`` at start, ``release()`` at a clean stop."""

    def __init__(self, inbox: Path, state_dir: Path, still_seconds: float = STILL_SECONDS) -> None:
        self.inbox, self.path = inbox, inbox / LEASE_NAME
        self.mine = Holder(socket.gethostname(), os.getpid(), str(state_dir.resolve()),
                           secrets.token_hex(16), 0.0)
        self.still_seconds = still_seconds
        self.lost: str | None = None  # why the lease is no longer ours, once it is not
        self.unwritable = False  # a read-only inbox: no lease is held, none is checked
        self._stopping = threading.Event()
        self._repeats = Repeats()
        self._thread = threading.Thread(target=self._refresh_loop, name="recond-lease", daemon=True)

    def acquire(self) -> None:
        """Take the lease, or raise InboxTaken naming the daemon that holds it; then keep it
        refreshed from a thread of its own. An inbox nobody may write to (read-only) holds no
        lease: recond then runs without one, and says so."""
        for _ in range(ACQUIRE_TRIES):
            try:
                if self._try_acquire():
                    break
            except OSError as error:
                if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise
                self.unwritable = True
                log.warning("the inbox takes no lease (read-only): a second recond on it would "
                            "not be refused", inbox=str(self.inbox), error=str(error))
                return
        else:
            raise InboxTaken(f"the inbox lease {self.path} kept changing while recond tried to "
                             "take it: another recond is starting on this inbox")
        log.info("inbox lease taken", inbox=str(self.inbox), lease=str(self.path))
        self._thread.start()

    def raise_if_lost(self) -> None:
        """Raise LeaseLost unless the lease file still names this daemon (read afresh)."""
        if self.unwritable:
            return
        if self.lost is None:
            try:
                holder = self._held()
            except OSError as error:  # a share in trouble: the job waits, the lease may hold
                raise LeaseLost(error.errno, f"the inbox lease {self.path} cannot be read now "
                                             f"({error.strerror}); the job waits") from None
            if holder.token != self.mine.token:
                self._lose(holder)
        if self.lost is not None:
            raise LeaseLost(errno.ESTALE, self.lost)

    def release(self) -> None:
        """Stop refreshing and remove the lease if it is still ours (a clean stop)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=REFRESH_SECONDS)
        if self.unwritable:
            return
        holder = self._read()
        if holder is not None and holder.token == self.mine.token:
            try:
                self.path.unlink()
            except OSError as error:
                log.warning("inbox lease not removed", lease=str(self.path), error=str(error))

    # Taking it.

    def _try_acquire(self) -> bool:
        """One try: True once the lease is ours, False to look again (it changed meanwhile)."""
        holder = self._read()
        if holder is None:
            return self._create()
        if not self._dead(holder):
            raise InboxTaken(self._taken_message(holder))
        aside = self.path.with_name(f"{LEASE_NAME}.{self.mine.token}.stale")
        try:
            os.rename(self.path, aside)  # of two daemons taking a dead lease, one renames it
        except FileNotFoundError:
            return False
        moved = _parse(aside)
        if moved is not None and moved.token != holder.token:  # a live one, taken in between
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        log.warning("took over the inbox lease of a daemon that is gone", previous=holder.described())
        return self._create()

    def _create(self) -> bool:
        """Write our lease where there is none (a link never replaces a file another wrote)."""
        staged = self._staged()
        try:
            os.link(staged, self.path)
        except FileExistsError:
            return False
        finally:
            staged.unlink(missing_ok=True)
        return True

    def _dead(self, holder: Holder) -> bool:
        """Is the daemon named by ``holder`` surely gone?"""
        if holder.host == self.mine.host and (holder.state_dir == self.mine.state_dir
                                              or not pid_alive(holder.pid)):
            return True  # our own state dir: its lock is ours, so its old holder has ended
        if holder.host == self.mine.host:
            return False
        if time.time() - holder.refreshed_at < LEASE_SECONDS:
            return False
        self._stopping.wait(self.still_seconds)  # stale by our clock: does it still move?
        again = self._read()
        return again is not None and again == holder

    def _taken_message(self, holder: Holder) -> str:
        age = max(0.0, time.time() - holder.refreshed_at)
        return (f"another recond works on the inbox {self.inbox} ({holder.described()}; its lease "
                f"{self.path.name} was refreshed {age:.0f} s ago). One inbox has one daemon: stop "
                "that one, or give this one another inbox (for many GPUs behind one queue, use "
                "executor = \"ray\"). If that daemon is gone for good, delete "
                f"{self.path} (it also expires {LEASE_SECONDS:.0f} s after its last refresh)")

    # Keeping it.

    def _refresh_loop(self) -> None:
        while not self._stopping.wait(REFRESH_SECONDS):
            if self.lost is not None:
                return
            try:
                self._refresh()
            except OSError as error:  # a share in trouble: try again at the next beat
                self._repeats.log(log.warning, "inbox lease not refreshed", lease=str(self.path),
                                  error=str(error))

    def _refresh(self) -> None:
        holder = self._held()
        if holder.token != self.mine.token:
            self._lose(holder)
            return
        os.replace(self._staged(), self.path)

    def _held(self) -> Holder:
        """Who holds the lease now. A lease file gone with nobody else's in its place (the inbox
        deleted and made again, a share remounted empty) is written again: still ours."""
        holder = self._read()
        if holder is None:
            if self._create():
                return self.mine
            holder = self._read()  # another daemon wrote its lease first
        if holder is None:
            raise FileNotFoundError(errno.ENOENT, "the lease file keeps vanishing", str(self.path))
        return holder

    def _lose(self, holder: Holder) -> None:
        self.lost = (f"this daemon's lease on the inbox {self.inbox} was taken over ({holder.described()}); "
                     "it stops so that no picture is processed twice")
        log.error(self.lost)

    # The file.

    def _staged(self) -> Path:
        record = {**self.mine.__dict__, "refreshed_at": time.time()}
        staged = self.path.with_name(f"{LEASE_NAME}.{self.mine.token}.tmp")
        staged.write_text(json.dumps(record) + "\n", encoding="utf-8")
        return staged

    def _read(self) -> Holder | None:
        return _parse(self.path)


def _parse(path: Path) -> Holder | None:
    """The holder a lease file names (None: no file); one that cannot be read as a lease (cut
    short, or garbage) counts as a holder long gone, so that it can be taken over."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
        return Holder(str(record["host"]), int(record["pid"]), str(record["state_dir"]),
                      str(record["token"]), float(record["refreshed_at"]))
    except (ValueError, KeyError, TypeError):
        return Holder("?", 0, "?", text[:32], 0.0)


def pid_alive(pid: int | None) -> bool:
    """True when a process with this id exists on this host (a lease's holder, a stale
    heartbeat, a killed process run)."""
    if not pid or pid < 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
