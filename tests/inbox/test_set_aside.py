"""Setting a picture aside in inbox/failed/: the move and its record agree after any kill, and a retry
finds the file wherever failed/ holds it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from recond.config import Settings
from recond.inbox.failed import error_note, move_to_failed
from recond.store import FAILED, RUNNING, Store
from recond.worker import Worker

from helpers.paths import REPO
from helpers.places import assert_in_one_place
from helpers.running import reconctl
from helpers.stand_in import StandInPipeline, sha256


KILL_AFTER_FAILED_MOVE = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from recond.inbox import failed
    from recond.config import load_settings
    from recond.store import Store
    from recond.worker import Worker

    real_move = failed.move_to_failed

    def move_then_die(*arguments):
        real_move(*arguments)
        os.kill(os.getpid(), signal.SIGKILL)  # after the move to failed/, before its record

    failed.move_to_failed = move_then_die
    root = sys.argv[1]
    settings = load_settings(inbox=root + "/inbox", outbox=root + "/outbox", state_dir=root + "/state")
    store = Store(settings.db_path)
    Worker(settings, store).fail_job(store.claim_next(), "not a picture")
""")


def test_kill_between_the_move_to_failed_and_its_record_is_found_again(settings: Settings,
                                                                       tmp_path: Path) -> None:
    store = Store(settings.db_path)
    (settings.inbox / "a.png").write_bytes(b"a picture that failed")
    job, _ = store.enqueue("a.png", sha256(b"a picture that failed"), 21, "t_a")
    child = subprocess.run([sys.executable, "-c", KILL_AFTER_FAILED_MOVE, str(tmp_path), str(REPO / "tests")],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert store.get(job.id).state == RUNNING
    assert assert_in_one_place(b"a picture that failed", settings.inbox, settings.outbox) == "failed failed/a.png"
    assert error_note(settings.inbox / "failed" / "a.png").is_file()
    pipeline = StandInPipeline()
    worker = Worker(settings, store, pipeline_factory=lambda s: pipeline)
    worker.recover()  # the restart
    worker.process(store.claim_next())
    ended = store.get(job.id)
    assert ended.state == FAILED and ended.output == str(settings.inbox.resolve() / "failed" / "a.png")
    assert pipeline.runs == []
    code, output = reconctl(settings, "retry", str(job.id))
    assert code == 0, output
    assert assert_in_one_place(b"a picture that failed", settings.inbox, settings.outbox) == "inbox a.png"


def test_retry_finds_a_file_in_failed_its_record_does_not_name(settings: Settings) -> None:
    store = Store(settings.db_path)
    (settings.inbox / "a.png").write_bytes(b"a picture")
    job, _ = store.enqueue("a.png", sha256(b"a picture"), 9, "t_a")
    store.claim_next()
    move_to_failed(settings.inbox, "a.png", job.id, "not a picture")
    store.fail(job.id, "the file was removed from the inbox before it was processed")  # an older recond
    code, output = reconctl(settings, "retry", str(job.id))
    assert code == 0 and "moved back" in output
    assert assert_in_one_place(b"a picture", settings.inbox, settings.outbox) == "inbox a.png"
