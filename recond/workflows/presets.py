"""Presets: named job settings (``[presets.NAME]``) chosen by a picture's first inbox folder.

A job's settings are resolved when it starts, from the settings of that moment, so a SIGHUP
that changes a preset applies to every job not yet started (issue 25).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from recond.config import JobSettings, Settings, part_of

# A hidden file in each preset's folder: the folder then stays when its last picture leaves
# (recond.inbox.failed.remove_emptied_folders removes only empty folders) and the intake,
# which ignores dot-files, never takes it for a picture.
PRESET_MARKER = ".recond-preset"


def preset_of(source: str, presets: Mapping[str, Any]) -> str | None:
    """The preset of a picture at inbox path ``source``: its first folder's name, when that
    is a preset's (``quick/mug.jpg`` -> ``quick``); None for the inbox itself or other folders."""
    parts = PurePosixPath(source).parts
    return parts[0] if len(parts) > 1 and parts[0] in presets else None


def job_settings(settings: Settings, preset: str | None,
                 overrides: Mapping[str, Any] | None = None) -> tuple[JobSettings, str | None]:
    """The job settings of one job: the top-level ones, then the preset's, then ``overrides``
    (a redo's --set, already checked). Returns them and a warning when the preset is gone."""
    base = part_of(settings, JobSettings)
    warning = None
    values: dict[str, Any] = {}
    if preset is not None:
        if preset in settings.presets:
            values.update(settings.presets[preset])
        else:
            warning = f"preset '{preset}' is no longer in the settings; its job used the defaults"
    values.update(overrides or {})
    return base.model_copy(update=values), warning


def create_preset_folders(inbox: Path, presets: Mapping[str, Any]) -> list[Path]:
    """An inbox folder for each preset (people on the share then see where to drop), with its
    marker; returns the folders made now. Errors (a read-only share) are left to the caller."""
    made = []
    for name in presets:
        folder = inbox / name
        if not folder.is_dir():
            folder.mkdir()
            made.append(folder)
        marker = folder / PRESET_MARKER
        if not marker.exists():
            descriptor = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.close(descriptor)
    return made
