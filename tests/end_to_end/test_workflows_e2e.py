"""Hot-folder workflows end to end (issue 25): the real `recond` with the tiny checkpoint, real
folders, real hook scripts, a real webhook receiver on 127.0.0.1 and `reconctl redo`.

Small settings (4 render views by default, 2 in the ``quick`` preset) keep each job to seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


from helpers.installation import Installation
from helpers.webhook_receiver import Receiver

QUICK = "\n[presets.quick]\nrender_views = 2\n"
SECRET = "a-shared-secret-for-tests"
# A hook that records each call: its arguments, its standard input and RECOND_RESULT_DIR.
RECORDING_HOOK = """import json, os, sys
with open(sys.argv[1], "a") as log:
    log.write(json.dumps({"args": sys.argv[2:], "stdin": sys.stdin.read(),
                          "env": os.environ.get("RECOND_RESULT_DIR")}) + "\\n")
"""


def installation_with(tmp_path: Path, tiny_model_dir: Path, shared_dir: Path, tables: str = "",
                      **settings: Any) -> Installation:
    setup = Installation(tmp_path, tiny_model_dir, shared_dir / "examples", **settings)
    setup.config.write_text(setup.config.read_text() + tables)
    return setup


def recording_hook(tmp_path: Path) -> tuple[list[str], Path]:
    script, calls = tmp_path / "record_hook.py", tmp_path / "hook_calls.jsonl"
    script.write_text(RECORDING_HOOK)
    return [sys.executable, str(script), str(calls)], calls


def hook_calls(calls: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def renders(folder: Path) -> int:
    return len(list(folder.glob("render_*.png")))


def done(count: int):
    return lambda status: status["counts"]["done"] >= count


def wait_until(condition, timeout: float, setup: Installation) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s\n{setup.stderr()}")


def log_events(setup: Installation) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (setup.state / "recond.log").read_text().splitlines()]


def test_preset_folder_hook_and_webhook_on_every_result(tmp_path, tiny_model_dir, shared_dir):
    """inbox/quick/ makes 2 renders and says so in job.json; kitchen/ gets the defaults; the hook
    and the webhook each hear of every result once, with its folder, job.json and a signature."""
    receiver = Receiver()
    hook, calls = recording_hook(tmp_path)
    setup = installation_with(tmp_path, tiny_model_dir, shared_dir, QUICK, on_published=hook,
                              webhook_url=receiver.url, webhook_secret=SECRET)
    try:
        setup.start()
        wait_until(lambda: (setup.inbox / "quick").is_dir(), 60, setup)  # made at start
        setup.drop_like_a_share("chair.png", "quick")
        setup.drop_like_a_share("robot.png", "kitchen")
        status = setup.wait(done(2), timeout=180)
        quick, kitchen = (next(p for p in setup.result_folders() if p.name.endswith(suffix))
                          for suffix in ("_quick_chair", "_kitchen_robot"))
        records = {folder: json.loads((folder / "job.json").read_text()) for folder in (quick, kitchen)}
        assert renders(quick) == 2 and records[quick]["preset"] == "quick"
        assert records[quick]["settings"]["render_views"] == 2
        assert renders(kitchen) == 4 and records[kitchen]["preset"] is None
        assert {job["source"]: job["preset"] for job in status["recent"]} == {
            "quick/chair.png": "quick", "kitchen/robot.png": None}
        assert (setup.inbox / "quick").is_dir()  # stays when its last picture left
        assert not (setup.inbox / "kitchen").exists()  # an ordinary folder goes, as before
        shown = setup.reconctl("status").stdout
        assert "quick/chair.png [preset quick]" in shown

        wait_until(lambda: len(hook_calls(calls)) == 2 and len(receiver.received) == 2, 30, setup)
        by_folder = {call["args"][-1]: call for call in hook_calls(calls)}
        assert set(by_folder) == {str(quick), str(kitchen)}
        for folder, call in by_folder.items():
            assert call["env"] == folder
            assert json.loads(call["stdin"]) == records[Path(folder)]
        posts = {post.document["result"]["name"]: post for post in receiver.received}
        assert set(posts) == {quick.name, kitchen.name}
        for name, post in posts.items():
            document = post.document
            assert document["event"] == "published" and post.headers["X-Recond-Event"] == "published"
            assert document["result"]["path"] == str(setup.outbox / name)
            copy = setup.outbox / name / "source.png"
            assert document["source_sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest()
            expected = "sha256=" + hmac.new(SECRET.encode(), post.body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(post.headers["X-Recond-Signature"], expected)
        assert len({post.headers["X-Recond-Event-Id"] for post in receiver.received}) == 2
        assert posts[quick.name].document["job"]["preset"] == "quick"
        assert setup.status()["owed"] == {"hook": 0, "webhook": 0}
    finally:
        setup.stop()
        receiver.stop()


def test_preset_with_an_unknown_key_is_refused_at_start(tmp_path, tiny_model_dir, shared_dir):
    setup = installation_with(tmp_path, tiny_model_dir, shared_dir,
                              "\n[presets.quick]\nrender_views = 2\nrender_viewz = 3\n")
    process = setup.start()
    assert process.wait(60) == 2
    assert "preset 'quick': unknown key 'render_viewz'" in setup.stderr()


def test_a_sighup_that_changes_a_preset_applies_to_jobs_not_yet_started(
        tmp_path, tiny_model_dir, shared_dir):
    """A picture waits in inbox/quick/ (no model yet); a SIGHUP brings the model and a new
    preset value: the job, not yet started, is made with the new value; a new preset's folder
    appears."""
    setup = installation_with(tmp_path, tiny_model_dir, shared_dir, QUICK,
                              model=str(tmp_path / "no-weights-yet"))
    try:
        process = setup.start()
        setup.wait(lambda status: status["daemon"]["model"] == "missing", timeout=60)
        setup.drop_like_a_share("chair.png", "quick")
        setup.wait(lambda status: status["counts"]["queued"] == 1, timeout=60)
        values = {**_values(setup), "model": str(tiny_model_dir)}
        setup.write_config(values)
        setup.config.write_text(setup.config.read_text()
                                + "\n[presets.quick]\nrender_views = 3\n\n[presets.print]\ntarget_faces = 0\n")
        process.send_signal(signal.SIGHUP)
        setup.wait(done(1), timeout=180)
        (folder,) = setup.result_folders()
        assert renders(folder) == 3
        assert json.loads((folder / "job.json").read_text())["preset"] == "quick"
        assert (setup.inbox / "print").is_dir()
    finally:
        setup.stop()


def test_failing_and_hanging_hooks_leave_the_queue_moving(tmp_path, tiny_model_dir, shared_dir):
    """One hook call fails, the next hangs: every picture is still published meanwhile, and the
    log gives each hook's exit status, or says it ran too long and was stopped."""
    script = tmp_path / "bad_hook.py"
    script.write_text("import sys, time\n"
                      "if 'chair' in sys.argv[-1]:\n    print('no asset library here'); sys.exit(3)\n"
                      "time.sleep(600)\n")
    on_failed, failures = recording_hook(tmp_path)
    setup = installation_with(tmp_path, tiny_model_dir, shared_dir, on_failed=on_failed,
                              on_published=[sys.executable, str(script)], hook_seconds=6)
    try:
        setup.start()
        (setup.inbox / "notes.png").write_text("a shopping list, not a photo\n")
        setup.wait(lambda status: status["counts"]["failed"] == 1, timeout=120)
        wait_until(lambda: len(hook_calls(failures)) == 1, 30, setup)
        (failure,) = hook_calls(failures)
        assert failure["args"][-1] == str(setup.inbox / "failed" / "notes.png")
        assert Path(failure["args"][-1]).is_file()
        told = json.loads(failure["stdin"])
        assert told["event"] == "failed" and told["job"]["source"] == "notes.png" and told["error"]
        setup.drop_like_a_share("chair.png")
        setup.wait(done(1), timeout=180)
        setup.drop_like_a_share("robot.png")
        setup.drop_like_a_share("flamingo.png")
        setup.wait(done(3), timeout=180)  # the robot's hook hangs meanwhile
        def hook_log() -> dict[str, dict[str, Any]]:
            return {event["event"]: event for event in log_events(setup)
                    if event["event"] in ("hook failed", "hook ran too long and was stopped")}
        wait_until(lambda: len(hook_log()) == 2, 60, setup)
        failed = hook_log()["hook failed"]
        assert failed["exit_status"] == 3 and "no asset library here" in failed["output"]
        assert "_chair" in failed["path"]
        assert hook_log()["hook ran too long and was stopped"]["limit_s"] == 6
    finally:
        setup.stop()


def test_hook_owed_when_the_daemon_is_killed_runs_after_the_restart(tmp_path, tiny_model_dir,
                                                                  shared_dir):
    slow = tmp_path / "slow_hook.py"
    started = tmp_path / "slow_hook.pid"
    slow.write_text(f"import os, time\nopen({str(started)!r}, 'w').write(str(os.getpid()))\n"
                    "time.sleep(600)\n")
    setup = installation_with(tmp_path, tiny_model_dir, shared_dir,
                              on_published=[sys.executable, str(slow)], hook_seconds=300)
    try:
        process = setup.start()
        setup.drop_like_a_share("chair.png")
        setup.wait(done(1), timeout=180)
        wait_until(started.exists, 30, setup)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        os.kill(int(started.read_text()), signal.SIGKILL)  # the hook's own process group lives on
        hook, calls = recording_hook(tmp_path)
        setup.write_config({**_values(setup), "on_published": hook})
        setup.start()
        wait_until(lambda: len(hook_calls(calls)) == 1, 90, setup)
        (folder,) = setup.result_folders()
        assert hook_calls(calls)[0]["args"][-1] == str(folder)
        assert setup.status()["owed"]["hook"] == 0
    finally:
        setup.stop()


def test_webhook_receiver_down_then_up_across_a_restart_gets_it_with_one_event_id(
        tmp_path, tiny_model_dir, shared_dir):
    """The receiver is down when the result is published, recond restarts, the receiver comes up
    and first answers 500: the event arrives, both tries with the same id and signature."""
    port = _free_port()  # nothing listens there yet
    setup = installation_with(tmp_path, tiny_model_dir, shared_dir,
                              webhook_url=f"http://127.0.0.1:{port}/hook", webhook_secret=SECRET)
    receiver = None
    try:
        setup.start()
        setup.drop_like_a_share("chair.png")
        setup.wait(lambda status: status["counts"]["done"] == 1 and status["owed"]["webhook"] == 1,
                   timeout=180)
        assert "owed:   1 webhook deliveries" in setup.reconctl("status").stdout
        assert setup.stop() == 0
        receiver = Receiver(port, answers=(500,))
        setup.start()
        wait_until(lambda: len(receiver.received) == 2, 60, setup)
        first, second = receiver.received
        assert (first.answered, second.answered) == (500, 200)
        assert first.headers["X-Recond-Event-Id"] == second.headers["X-Recond-Event-Id"]
        assert first.body == second.body
        expected = "sha256=" + hmac.new(SECRET.encode(), second.body, hashlib.sha256).hexdigest()
        assert second.headers["X-Recond-Signature"] == expected
        (folder,) = setup.result_folders()
        assert second.document["result"]["name"] == folder.name
        setup.wait(lambda status: status["owed"]["webhook"] == 0, timeout=30)
    finally:
        setup.stop()
        if receiver is not None:
            receiver.stop()


def test_redo_with_other_settings_makes_a_second_folder_and_keeps_the_first(
        tmp_path, tiny_model_dir, shared_dir):
    """`reconctl redo --set render_views=3` gives a new folder with 3 renders, recording what it
    was redone from; the first folder is unchanged; a redo of the redo keeps the 3."""
    setup = installation_with(tmp_path, tiny_model_dir, shared_dir, QUICK)
    try:
        setup.start()
        setup.drop_like_a_share("chair.png", "quick")
        setup.wait(done(1), timeout=180)
        (first,) = setup.result_folders()
        before = {path.name: path.read_bytes() for path in first.iterdir()}
        redone = setup.reconctl("redo", first.name, "--set", "render_views=3", "--json")
        assert redone.returncode == 0, redone.stderr
        job = json.loads(redone.stdout)
        assert job["redo_of"] == first.name and job["preset"] == "quick"
        setup.wait(done(2), timeout=180)
        (second,) = [folder for folder in setup.result_folders() if folder != first]
        assert renders(second) == 3 and renders(first) == 2
        assert {path.name: path.read_bytes() for path in first.iterdir()} == before
        record = json.loads((second / "job.json").read_text())
        assert record["redone_from"]["result"] == first.name
        assert record["preset"] == "quick" and record["overrides"] == {"render_views": 3}
        assert (second / "source.png").read_bytes() == (first / "source.png").read_bytes()

        again = setup.reconctl("redo", second.name, "--preset", "")
        assert again.returncode == 0, again.stderr
        setup.wait(done(3), timeout=180)
        (third,) = [folder for folder in setup.result_folders() if folder not in (first, second)]
        third_record = json.loads((third / "job.json").read_text())
        assert third_record["redone_from"]["result"] == second.name
        assert third_record["preset"] is None and renders(third) == 3

        refused = setup.reconctl("redo", first.name, "--set", "render_viewz=3")
        assert refused.returncode == 1 and "unknown key 'render_viewz'" in refused.stderr
    finally:
        setup.stop()


def _values(setup: Installation) -> dict[str, Any]:
    import tomllib

    values = tomllib.loads(setup.config.read_text())
    return {key: value for key, value in values.items() if not isinstance(value, dict)}


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
