"""executor = "ray" with nothing listening at ray_address (issue 26): the real `recond` says
"connecting to Ray at ..." within seconds, then why it failed, keeps the picture queued, and
SIGTERM ends it within seconds, before and after a SIGHUP. Before issue 26 it sat in ray.init
for minutes and only SIGKILL stopped it.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from helpers.installation import Installation

# Generous for a 2-core machine shared with other jobs: the daemon starts, then the probe child
# imports Ray; the point is seconds, not the minutes of before.
SECONDS_TO_SAY = 30.0
SECONDS_TO_STOP = 10.0
CONNECT_SECONDS = 6  # ray_connect_seconds: how long the probe may wait for an answer


def nobody_listens() -> str:
    """A loopback address with nothing listening (a port just freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def unreachable(tmp_path: Path, tiny_model_dir: Path, shared_dir: Path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    setup = Installation(tmp_path, tiny_model_dir, shared_dir / "examples", executor="ray",
                         ray_address=nobody_listens(), ray_connect_seconds=CONNECT_SECONDS,
                         model_retry_seconds=2)
    yield setup
    setup.stop()


def model_line(setup: Installation) -> tuple[str, str]:
    daemon = setup.status()["daemon"]
    return daemon["model"] or "", daemon["model_detail"] or ""


def wait_for(setup: Installation, condition, seconds: float) -> tuple[str, str]:
    deadline = time.monotonic() + seconds
    seen = ("", "")
    while time.monotonic() < deadline:
        seen = model_line(setup)
        if condition(*seen):
            return seen
        assert setup.process is not None and setup.process.poll() is None, setup.stderr()
        time.sleep(0.2)
    raise AssertionError(f"status never showed it within {seconds} s; last {seen}\n{setup.stderr()}")


def stops_within_seconds(setup: Installation) -> float:
    assert setup.process is not None
    started = time.monotonic()
    setup.process.send_signal(signal.SIGTERM)
    setup.process.wait(SECONDS_TO_STOP + 20)  # a failure shows the time it took, not a hang
    took = time.monotonic() - started
    print(f"SIGTERM to exit: {took:.2f} s")
    assert took < SECONDS_TO_STOP, f"SIGTERM took {took:.1f} s\n{setup.stderr()}"
    return took


def test_status_says_connecting_then_why_and_the_picture_waits(unreachable):
    setup = unreachable
    address = setup.config.read_text().split('ray_address = "')[1].split('"')[0]
    setup.start()
    setup.drop_like_a_share("chair.png")
    wait_for(setup, lambda model, detail: f"connecting to Ray at {address}" in detail, SECONDS_TO_SAY)
    model, detail = wait_for(setup, lambda model, detail: model == "missing",
                             SECONDS_TO_SAY + CONNECT_SECONDS)
    assert "no Ray cluster answers" in detail and f"{CONNECT_SECONDS} s" in detail, detail
    assert setup.status()["counts"]["queued"] == 1  # nothing fails for want of a cluster
    wait_for(setup, lambda model, detail: "connecting to Ray" in detail, SECONDS_TO_SAY)  # it retries
    stops_within_seconds(setup)
    assert setup.status()["counts"]["queued"] == 1
    assert (setup.inbox / "chair.png").is_file()


def test_sigterm_ends_it_within_seconds_while_connecting_before_and_after_a_sighup(unreachable):
    setup = unreachable
    setup.start()
    wait_for(setup, lambda model, detail: "connecting to Ray" in detail, SECONDS_TO_SAY)
    assert setup.process is not None
    setup.process.send_signal(signal.SIGHUP)  # re-reads the settings and connects again
    time.sleep(1.0)
    wait_for(setup, lambda model, detail: "connecting to Ray" in detail, SECONDS_TO_SAY)
    assert stops_within_seconds(setup) < SECONDS_TO_STOP
    assert setup.process.returncode == 0, setup.stderr()


def test_sigterm_ends_it_within_seconds_while_it_connects_the_first_time(unreachable):
    setup = unreachable
    setup.start()
    wait_for(setup, lambda model, detail: "connecting to Ray" in detail, SECONDS_TO_SAY)
    stops_within_seconds(setup)
    assert setup.process is not None and setup.process.returncode == 0, setup.stderr()
