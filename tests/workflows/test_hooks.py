"""run_hook: a real child process gets the path last, the document on stdin and
RECOND_RESULT_DIR; one that runs too long is stopped with everything it started."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from recond.workflows.hooks import run_hook

ECHO = ("import json, os, sys\n"
        "print(json.dumps({'args': sys.argv[1:], 'stdin': sys.stdin.read(), "
        "'env': os.environ.get('RECOND_RESULT_DIR')}))\n"
        "sys.exit(int(os.environ.get('EXIT', '0')))\n")


def script(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "hook.py"
    path.write_text(text)
    return [sys.executable, str(path), "--first"]


def test_hook_gets_the_path_last_the_document_on_stdin_and_the_variable(tmp_path):
    outcome = run_hook(script(tmp_path, ECHO), "/srv/outbox/result", '{"faces": 12}', 30,
                       threading.Event())
    assert outcome.ok and not outcome.timed_out
    seen = json.loads(outcome.output)
    assert seen == {"args": ["--first", "/srv/outbox/result"], "stdin": '{"faces": 12}',
                    "env": "/srv/outbox/result"}


def test_exit_status_of_a_failing_hook_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("EXIT", "7")
    outcome = run_hook(script(tmp_path, ECHO), "/x", "", 30, threading.Event())
    assert outcome.exit_status == 7 and not outcome.ok


def test_a_hook_past_its_seconds_is_stopped_with_its_children(tmp_path):
    child_pid = tmp_path / "child.pid"
    command = script(tmp_path, "import subprocess, sys, time\n"
                     f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
                     f"open({str(child_pid)!r}, 'w').write(str(child.pid))\n"
                     "time.sleep(600)\n")
    started = time.monotonic()
    outcome = run_hook(command, "/x", "", 1.5, threading.Event())
    assert outcome.timed_out and outcome.exit_status is None
    assert time.monotonic() - started < 30
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid), "the hook's child outlived it"


def test_stopping_recond_stops_a_running_hook_and_says_so(tmp_path):
    stopping = threading.Event()
    threading.Timer(0.5, stopping.set).start()
    outcome = run_hook(script(tmp_path, "import time; time.sleep(600)\n"), "/x", "", 300, stopping)
    assert outcome.stopped and not outcome.timed_out


def test_a_hook_that_floods_its_output_keeps_only_the_end(tmp_path):
    outcome = run_hook(script(tmp_path, "import sys\nsys.stdout.write('x' * 5_000_000 + 'END')\n"),
                       "/x", "", 30, threading.Event())
    assert outcome.ok and outcome.output.endswith("END") and len(outcome.output) <= 4000


def test_a_command_that_does_not_exist_raises(tmp_path):
    with pytest.raises(OSError):
        run_hook([str(tmp_path / "missing")], "/x", "", 5, threading.Event())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init in a container) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
