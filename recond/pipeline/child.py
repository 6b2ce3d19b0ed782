"""A stage's child process (ffmpeg), held to the stage's time limit and stopped with the job.

A child that hangs, even one frozen by SIGSTOP, would otherwise hold the worker for good (issue
18: the job sat at "render 98 %, ETA 0 s" for minutes and SIGTERM waited past a minute). While
it runs, the stage reports its progress again every POLL_SECONDS, so a stopping daemon's
cancellation (raised from the progress callback) reaches it; past the stage's limit it is
killed and the stage raises StageTimedOut. Either way the child is gone when this returns.
"""

from __future__ import annotations

import subprocess

from recond.errors import StageTimedOut
from recond.pipeline.progress import StageClock

POLL_SECONDS = 0.5
STDERR_TAIL_CHARS = 400  # of a failed child's own words, quoted in the job's error


def run_child(command: list[str], stdin: bytes, clock: StageClock, stage: str, what: str) -> None:
    """Run ``command`` with ``stdin`` as its input, within ``clock``'s time limit.

    Raises StageTimedOut past the limit and RuntimeError (with the tail of the child's stderr)
    when it fails; whatever the progress callback raises (a cancelled job) passes through.
    """
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    pending_input: bytes | None = stdin
    try:
        while True:
            try:
                # communicate() keeps what it has not written yet across timeouts (Python docs,
                # Popen.communicate), so the input is handed over once only.
                _, errors = process.communicate(pending_input, timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pending_input = None
                clock.again()
                if clock.seconds_left() <= 0:
                    raise StageTimedOut(stage, what, clock.spent(), clock.limit_s, clock.expected_s) from None
    finally:
        if process.poll() is None:
            process.kill()  # SIGKILL ends a stopped process too
            process.wait()
    if process.returncode != 0:
        tail = errors.decode(errors="replace").strip()[-STDERR_TAIL_CHARS:]
        raise RuntimeError(f"{what} failed with exit code {process.returncode}: {tail}")
