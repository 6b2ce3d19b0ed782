"""Whether the outbox can take results: a full or unwritable outbox, or one that is no longer
the folder recond started with (a share unmounted under it), is a state of the machine, not a
failure of the picture, so the worker pauses the queue here and resumes when it clears.
"""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from pathlib import Path

from recond.outbox import publish
from recond.shares.identity import FolderIdentity, FolderReplaced

MIN_FREE_BYTES = 16 * 1024 * 1024  # an outbox with less free space than this pauses the queue
REGAINED_BYTES = 1 << 20  # after ENOSPC, resume only once this much more is free than before
SPACE_ERRORS = (errno.ENOSPC, errno.EDQUOT)


@dataclass
class OutboxFault:
    reason: str
    needs_space: bool  # resume only when free space grew (else a retry would fill it again)
    free_bytes: int


class OutboxGate:
    """Tells a job error caused by the outbox from one caused by the picture, and probes it."""

    def __init__(self, outbox: Path, owner: str, state_dir: Path, adopt_any: bool = False) -> None:
        self.outbox, self.owner = outbox, owner
        self.identity = FolderIdentity("outbox", outbox, state_dir, adopt_any)
        self.fault: OutboxFault | None = None

    def fault_in(self, error: BaseException) -> OutboxFault | None:
        """The outbox fault behind this error (or present now), if any."""
        chain: BaseException | None = error
        while chain is not None:
            if isinstance(chain, FolderReplaced):
                return self._fault(str(chain.strerror), False)
            if isinstance(chain, OSError) and chain.errno in (*SPACE_ERRORS, errno.EROFS):
                state = "read-only" if chain.errno == errno.EROFS else "full"
                return self._fault(f"the outbox {self.outbox} is {state} ({chain.strerror})",
                                   chain.errno in SPACE_ERRORS)
            if isinstance(chain, PermissionError) and str(self.outbox) in str(chain.filename or ""):
                return self._fault(f"recond may not write to the outbox {self.outbox} ({chain.strerror})", False)
            chain = chain.__cause__ or chain.__context__
        return self.probe()

    def probe(self) -> OutboxFault | None:
        """Is it the outbox recond started with, can a staging folder be made, and is there
        room? None when all is well."""
        replaced = self.identity.check()
        if replaced:
            return self._fault(replaced, False)
        try:
            probe = publish.staging_dir(self.outbox, "probe", f"{self.owner}-probe")
            probe.mkdir()
            probe.rmdir()
        except OSError as error:
            return self._fault(f"recond cannot write to the outbox {self.outbox} ({error.strerror})",
                               error.errno in SPACE_ERRORS)
        free = _free_bytes(self.outbox)
        if free < MIN_FREE_BYTES:
            return self._fault(f"the outbox {self.outbox} is full ({free // 1024} KiB free)", True)
        return None

    def cleared(self) -> bool:
        """Has the recorded fault gone (writable again, and for space: more room than before)?"""
        if self.fault is None:
            return True
        replaced = self.identity.check()
        if replaced:  # e.g. gone a moment ago, another folder now: the fault names what holds it
            self.fault = OutboxFault(replaced, self.fault.needs_space, self.fault.free_bytes)
            return False
        if self.probe() is not None:
            return False
        if self.fault.needs_space and _free_bytes(self.outbox) < self.fault.free_bytes + REGAINED_BYTES:
            return False
        self.fault = None
        return True

    def _fault(self, reason: str, needs_space: bool) -> OutboxFault:
        return OutboxFault(reason, needs_space, _free_bytes(self.outbox))


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0
