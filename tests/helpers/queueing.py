"""Putting a picture in a test's inbox and its job in the store by hand, as intake would."""

from __future__ import annotations

from pathlib import Path

from helpers.stand_in import sha256
from recond.config import Settings
from recond.store import Store


def queue_file(settings: Settings, store: Store, name: str, data: bytes = b"picture") -> int:
    (settings.inbox / name).parent.mkdir(parents=True, exist_ok=True)
    (settings.inbox / name).write_bytes(data)
    job, _ = store.enqueue(name, sha256(data), len(data), f"20260101-000000_{Path(name).stem}")
    return job.id
