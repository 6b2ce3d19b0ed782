"""Running one hook: the user's command with a path as its last argument and a document on
its standard input, held to ``hook_seconds`` (issue 25).

Its standard input and output are temporary files, not pipes, so a hook that never reads its
input or floods its output can neither block recond nor fill its memory; the log gets the
output's last OUTPUT_SHOWN_BYTES. The command runs in its own process group, so stopping it
also stops what it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

RESULT_DIR_VARIABLE = "RECOND_RESULT_DIR"
OUTPUT_SHOWN_BYTES = 4000
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class HookOutcome:
    """How a hook ended: its exit status (None when it was stopped), and its output's end."""

    exit_status: int | None
    output: str
    seconds: float
    timed_out: bool = False
    stopped: bool = False  # recond is stopping: the hook stays owed and runs after the restart

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def run_hook(command: list[str], path: str, stdin_text: str, seconds: float,
             stopping: threading.Event) -> HookOutcome:
    """Run ``command + [path]`` to its end, to ``seconds``, or until ``stopping`` is set.

    Raises OSError when the command cannot be started (not found, not executable).
    """
    started = time.monotonic()
    with tempfile.TemporaryFile() as given, tempfile.TemporaryFile() as output:
        given.write(stdin_text.encode("utf-8"))
        given.seek(0)
        process = subprocess.Popen(
            [*command, path], stdin=given, stdout=output, stderr=subprocess.STDOUT,
            env={**os.environ, RESULT_DIR_VARIABLE: path}, start_new_session=True)
        deadline = started + seconds
        timed_out = stopped = False
        while process.poll() is None:
            if stopping.is_set():
                stopped = True
            elif time.monotonic() > deadline:
                timed_out = True
            if stopped or timed_out:
                _stop(process)
                break
            time.sleep(POLL_SECONDS)
        output.seek(max(0, output.seek(0, os.SEEK_END) - OUTPUT_SHOWN_BYTES))
        shown = output.read().decode("utf-8", "replace").strip()
    status = None if (timed_out or stopped) else process.returncode
    return HookOutcome(status, shown, round(time.monotonic() - started, 2), timed_out, stopped)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the hook's process group, SIGKILL a second later if it is still there."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
        try:
            process.wait(1.0)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()
