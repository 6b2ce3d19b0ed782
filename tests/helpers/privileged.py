"""Root-only test set-ups: a private mount, a command run as nobody (uid 65534)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


from helpers.paths import REPO


AS_NOBODY = [  # uid/gid 65534 in a private mount namespace where /root is traversable
    "unshare", "-m", "--propagation", "private", "sh", "-c",
    "mkdir -p /tmp/.recond-pyenv && mount --bind /root/.pyenv /tmp/.recond-pyenv && "
    "mount -t tmpfs -o mode=0755 tmpfs /root && mkdir /root/.pyenv && "
    "mount --bind /tmp/.recond-pyenv /root/.pyenv && "
    'exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"', "sh"]


@contextmanager
def mounted(*arguments: str, target: Path) -> Iterator[None]:
    result = subprocess.run(["mount", *arguments, str(target)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"mount {' '.join(arguments)} not permitted here: {result.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def as_nobody(*command: str, env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "PYTHONPATH": str(REPO)}
    return subprocess.run([*AS_NOBODY, *command], env={**base, **(env or {})}, cwd="/tmp",
                          capture_output=True, text=True, timeout=timeout)
