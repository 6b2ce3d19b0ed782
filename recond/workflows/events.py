"""The two events a job ends with, published and failed, as the deliveries they owe: a hook
run and a webhook POST each, when the settings ask for them (issue 25).

Each delivery's payload is fixed when the event happens and kept in the job store, so a
delivery made after a restart says what the event said.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from recond.config import WorkflowSettings
from recond.pipeline.names import RECORD_NAME
from recond.store import Job, Owed

PUBLISHED, FAILED = "published", "failed"
HOOK, WEBHOOK = "hook", "webhook"


def job_document(job: Job, preset: str | None) -> dict[str, Any]:
    """The job's facts a receiver may want: what, from where, with which preset, when."""
    return {"id": job.id, "source": job.source, "sha256": job.sha256, "size": job.size,
            "preset": preset, "overrides": job.overrides, "redo_of": job.redo_of,
            "attempts": job.attempts, "queued_at": job.queued_at, "started_at": job.started_at,
            "finished_at": time.time()}


def published(settings: WorkflowSettings, job: Job, folder: Path, sha256: str) -> list[Owed]:
    """What a publish owes: the hook gets the folder's job.json as it is on disk, the webhook a
    document with the job's facts, the folder's name and path and the source's sha256."""
    try:
        record_text = (folder / RECORD_NAME).read_text(encoding="utf-8")
        record = json.loads(record_text)
    except (OSError, ValueError):  # a result from before job.json, or one edited by hand
        record_text, record = "{}", {}
    document = {"event": PUBLISHED, "job": job_document(job, record.get("preset", job.preset)),
                "result": {"name": folder.name, "path": str(folder)},
                "source_sha256": sha256, "record": record}
    return _owed(settings.on_published, settings, PUBLISHED, str(folder), record_text, document)


def failed(settings: WorkflowSettings, job: Job, error: str, kept_at: str | None) -> list[Owed]:
    """What a failure owes: hook and webhook both get the failure as one JSON document; the
    path is where the picture now lies (inbox/failed/..., or a redo's result folder's copy)."""
    document = {"event": FAILED, "job": job_document(job, job.preset), "error": error,
                "picture": {"path": kept_at}, "source_sha256": job.sha256}
    text = json.dumps(document, indent=2, default=str)
    return _owed(settings.on_failed, settings, FAILED, kept_at or "", text, document)


def _owed(hook: list[str] | None, settings: WorkflowSettings, event: str, path: str,
          hook_input: str, document: dict[str, Any]) -> list[Owed]:
    owed = []
    if hook:
        owed.append(Owed(event, HOOK, path, hook_input))
    if settings.webhook_url:
        owed.append(Owed(event, WEBHOOK, path, json.dumps(document, default=str)))
    return owed
