"""job.json: what went into a result and how it was made, for people and for scripts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from recond.pipeline.names import RECORD_NAME


def sha256_of_bytes(content: bytes) -> str:
    """The hex SHA-256 of bytes already in memory (intake hashes files as they settle)."""
    return hashlib.sha256(content).hexdigest()


def read_record(result_dir: Path | str) -> dict[str, Any]:
    """A result folder's job.json, or {} when it is gone, unreadable or not a record (a folder
    removed or edited by hand, or a result from before job.json)."""
    try:
        record = json.loads((Path(result_dir) / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_record(result_dir: Path, record: dict[str, Any]) -> Path:
    """Write job.json, listing every file of the folder (job.json included)."""
    path = result_dir / RECORD_NAME
    files = sorted({p.name for p in result_dir.iterdir() if p.is_file()} | {RECORD_NAME})
    path.write_text(json.dumps({**record, "files": files}, indent=2, default=str) + "\n",
                    encoding="utf-8")
    return path
