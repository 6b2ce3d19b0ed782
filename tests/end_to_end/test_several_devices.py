"""Several warm models in one daemon without Ray (issue 23, the ``devices`` setting), as
``devices = ["cpu", "cpu"]``: a real `recond` process, two warm copies of the tiny checkpoint,
two host processes, six distinct pictures dropped at once, and a kill -9 of the
daemon in the middle of the run. Only the GPUs are stand-ins: there are none here, and two
CPU "devices" exercise the same code (a model per device, a device thread each).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from helpers.daemon_rows import daemon_row
from helpers.installation import Installation, counts
from helpers.places import assert_each_in_one_place

from recond.outbox.publish import STAGING_SUFFIX
from recond.pipeline.names import RECORD_NAME

# The examples with their own transparency: no rembg model is needed to cut them out.
PICTURES = ("chair.png", "flamingo.png", "hamburger.png", "horse.png", "police_woman.png", "robot.png")


def device_workers(installation: Installation) -> list[dict[str, Any]]:
    workers = json.loads(daemon_row(installation).get("workers") or "[]")
    return [worker for worker in workers if worker["kind"] == "device"]


def test_two_device_workers_share_six_pictures_and_a_kill_9_loses_none(tmp_path: Path, tiny_model_dir: Path,
                                                                       shared_dir: Path) -> None:
    installation = Installation(tmp_path, tiny_model_dir, shared_dir / "examples", devices=["cpu", "cpu"],
                                host_workers=2, mc_resolution=64)  # a device part long enough to be seen
    try:
        installation.start()
        status = installation.wait(lambda s: s["daemon"].get("model") == "ready", timeout=120)
        shown = [(worker["name"], worker["kind"], worker["device"]) for worker in status["daemon"]["workers"]]
        assert shown[:2] == [("device-0", "device", "cpu"), ("device-1", "device", "cpu")]
        assert [kind for _, kind, _ in shown[2:]] == ["host", "host"]
        for name in PICTURES:  # all at once, so that the worker has work for both models
            (installation.inbox / f".{name}.part").write_bytes((installation.examples / name).read_bytes())
        for name in PICTURES:
            (installation.inbox / f".{name}.part").rename(installation.inbox / name)

        # Both warm models take pictures: each device worker is seen busy, with different jobs.
        busy: dict[str, set[int]] = {}
        deadline = time.monotonic() + 120
        while len(busy) < 2 and time.monotonic() < deadline:
            for worker in device_workers(installation):
                if worker["busy"]:
                    busy.setdefault(worker["name"], set()).add(worker["job_id"])
            time.sleep(0.02)
        assert sorted(busy) == ["device-0", "device-1"]

        # kill -9 with jobs in flight, then a restart finishes every picture exactly once.
        installation.wait(lambda s: len(s["running"]) >= 2 and counts(s)["done"] < len(PICTURES))
        installation.process.kill()
        installation.process.wait(10)
        installation.start()
        status = installation.wait(lambda s: counts(s)["done"] == len(PICTURES), timeout=240)
    finally:
        installation.stop()
    assert counts(status)["failed"] == counts(status)["queued"] == counts(status)["running"] == 0
    folders = installation.result_folders()
    assert not [folder for folder in installation.outbox.iterdir() if folder.name.endswith(STAGING_SUFFIX)]
    sources = sorted(json.loads((folder / RECORD_NAME).read_text())["source"] for folder in folders)
    assert sources == sorted(PICTURES)  # six results, one per picture
    places = assert_each_in_one_place([(installation.examples / name).read_bytes() for name in PICTURES],
                                      installation.inbox, installation.outbox)
    assert all(not place.startswith("failed") for place in places)
