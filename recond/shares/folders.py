"""The folders recond works in: which it creates, which it waits for, and errors naming the setting.

A missing inbox or outbox is created only when its parent exists. A missing parent most likely
means a network share that is not mounted yet; creating the folder would put a local one under
the mount point, where nobody looks, so recond waits for the share instead.
"""

from __future__ import annotations

from pathlib import Path

from recond.config import Settings

SHARE_FOLDERS = ("inbox", "outbox")  # often on a mounted share: waited for, never made with parents


class FolderError(RuntimeError):
    """A folder setting recond cannot use (cannot create or write it); the message names the setting."""


def folder_error(name: str, path: Path, error: OSError) -> FolderError:
    return FolderError(f"setting {name}: {path}: {error.strerror or error} "
                       f"(key '{name}' in the config file or RECOND_{name.upper()})")


def create_state_dir(settings: Settings) -> Path:
    """The state dir is local (e.g. /var/lib/recond): created with its parents."""
    folder = settings.state_dir.expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise folder_error("state_dir", folder, error) from None
    return folder


def waiting_reason(name: str, path: Path) -> str | None:
    """The line recond logs and shows while a share folder and its parent are both missing."""
    folder = path.expanduser().resolve()
    if folder.is_dir() or folder.parent.is_dir():
        return None
    return (f"{name} {folder} is missing and so is its parent {folder.parent} (a share not "
            "mounted yet?); waiting for it, creating nothing")


def missing_share_folder(name: str, path: Path) -> str | None:
    """Why ``path`` cannot be used yet (its parent is missing too), or None once it exists."""
    folder = path.expanduser().resolve()
    reason = waiting_reason(name, folder)
    if folder.is_dir() or reason:
        return reason
    try:
        folder.mkdir()
    except FileExistsError:
        if not folder.is_dir():
            raise FolderError(f"setting {name}: {folder} is a file, not a folder") from None
    except OSError as error:
        raise folder_error(name, folder, error) from None
    return None


def missing_share_folders(settings: Settings) -> list[str]:
    """Create the inbox and outbox where their parents exist; one line for each still missing."""
    waiting = (missing_share_folder(name, getattr(settings, name)) for name in SHARE_FOLDERS)
    return [line for line in waiting if line]
