"""inbox/failed/ on real folders: a picture moves aside with its note and back again, the folder is
made safely whatever holds its name, and emptied subfolders are tidied."""

from __future__ import annotations

from pathlib import Path

import pytest

from recond.inbox.failed import (
    error_note,
    failed_folder,
    move_back_from_failed,
    move_to_failed,
    remove_emptied_folders,
)
from recond.shares import beneath


def test_failed_file_moves_aside_with_a_note_and_back_again(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "sub" / "a.jpg").write_bytes(b"bytes")
    kept = move_to_failed(inbox, "sub/a.jpg", 7, "not a picture")
    assert kept == inbox / "failed" / "a.jpg" and kept.read_bytes() == b"bytes"
    note = error_note(kept).read_text()
    assert "not a picture" in note and "reconctl retry 7" in note
    assert not (inbox / "sub").exists()  # emptied by recond: removed
    (inbox / "sub2").mkdir()
    (inbox / "sub2" / "a.jpg").write_bytes(b"other")
    second = move_to_failed(inbox, "sub2/a.jpg", 8, "boom")
    assert second.name == "a-job8.jpg" and kept.read_bytes() == b"bytes"
    back = move_back_from_failed(inbox, kept, "sub/a.jpg")
    assert back == inbox / "sub" / "a.jpg" and back.read_bytes() == b"bytes"
    assert not error_note(kept).exists()


def test_failed_folder_is_made_safely_when_a_file_or_link_holds_its_name(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "failed").write_bytes(b"a user's file called failed")
    with beneath.opened(beneath.open_root(inbox)) as root:
        assert failed_folder(root) == "failed-recond"
        (inbox / "failed-recond").rmdir()
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        (inbox / "failed-recond").symlink_to(outside)
        with pytest.raises(NotADirectoryError, match="failed"):
            failed_folder(root)
    assert (inbox / "failed").read_bytes() == b"a user's file called failed"


def test_very_long_name_fits_in_failed_with_its_note(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    long_name = "x" * 251 + ".png"
    (inbox / long_name).write_bytes(b"bytes")
    kept = move_to_failed(inbox, long_name, 3, "boom")
    assert kept.read_bytes() == b"bytes" and kept.suffix == ".png"
    assert len(error_note(kept).name.encode()) <= 255 and error_note(kept).is_file()


def test_emptied_subfolders_go_but_the_inbox_and_folders_with_new_files_stay(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "a" / "b").mkdir(parents=True)
    (inbox / "c").mkdir()
    (inbox / "c" / "new.jpg").write_bytes(b"arrived meanwhile")
    remove_emptied_folders(inbox, "a/b/gone.jpg")
    remove_emptied_folders(inbox, "c/gone.jpg")
    remove_emptied_folders(inbox, "top.jpg")
    assert inbox.is_dir() and not (inbox / "a").exists() and (inbox / "c" / "new.jpg").exists()
