"""The inbox/outbox layout on real folders: staging and publishing (the contract every caller
relies on, tested here once), result names, inbox/failed/ with its notes, emptied subfolders."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from recond.inbox.failed import (
    error_note,
    failed_folder,
    move_back_from_failed,
    move_to_failed,
    remove_emptied_folders,
)
from recond.names import RESULT_NAME_MAX_BYTES, result_name_for, shorten
from recond.outbox import leftovers, publish
from recond.pipeline.record import write_record
from recond.shares import beneath


def write_result(folder: Path, data: bytes) -> Path:
    """The files a finished result holds that layout reads: source.* and job.json."""
    import hashlib

    (folder / "source.png").write_bytes(data)
    write_record(folder, {"source_copy": "source.png", "sha256": hashlib.sha256(data).hexdigest()})
    return folder


def test_result_appears_in_one_step_under_its_name(tmp_path: Path) -> None:
    seen_while_building = []

    def build(folder: Path) -> str:
        write_result(folder, b"picture")
        seen_while_building.extend(sorted(p.name for p in tmp_path.iterdir()))
        return "built"

    built, published = publish.build_result(tmp_path, "20260101-000000_mug", "abc-1", build)
    assert built == "built" and published == tmp_path / "20260101-000000_mug"
    assert seen_while_building == [".20260101-000000_mug.abc-1.partial"]  # hidden until complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20260101-000000_mug"]
    assert (published / "source.png").read_bytes() == b"picture"


def test_failure_mid_build_leaves_nothing(tmp_path: Path) -> None:
    def build(folder: Path) -> None:
        (folder / "mesh.obj").write_text("half")
        raise RuntimeError("stage failed")

    with pytest.raises(RuntimeError, match="stage failed"):
        publish.build_result(tmp_path, "mug", "abc-1", build)
    assert list(tmp_path.iterdir()) == []


def test_existing_result_is_never_overwritten_and_the_new_one_gets_a_free_name(tmp_path: Path) -> None:
    earlier = tmp_path / "chair"
    earlier.mkdir()
    (earlier / "mesh.glb").write_bytes(b"an earlier result")
    (tmp_path / "chair-2").mkdir()  # even an empty folder is not replaced (rename(2) would)
    _, published = publish.build_result(tmp_path, "chair", "abc-1", lambda f: write_result(f, b"new"))
    assert published == tmp_path / "chair-3"
    assert [p.name for p in earlier.iterdir()] == ["mesh.glb"]
    assert (earlier / "mesh.glb").read_bytes() == b"an earlier result"
    assert list((tmp_path / "chair-2").iterdir()) == []


def test_rename_no_replace_refuses_an_existing_target(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    with pytest.raises(FileExistsError):
        publish.rename_no_replace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"b" and (tmp_path / "a").read_bytes() == b"a"


def test_staging_is_unique_per_daemon_and_job_and_only_own_leftovers_are_cleaned(tmp_path: Path) -> None:
    mine, theirs = publish.owner_tag("/var/lib/recond"), publish.owner_tag("/var/lib/other")
    assert mine != theirs and mine == publish.owner_tag("/var/lib/recond")
    names = {publish.staging_dir(tmp_path, "mug", f"{owner}-{job}").name
             for owner in (mine, theirs) for job in (1, 2)}
    assert len(names) == 4
    own = publish.staging_dir(tmp_path, "mug", f"{mine}-1")
    other = publish.staging_dir(tmp_path, "mug", f"{theirs}-1")
    for folder in (own, other):
        folder.mkdir()
        (folder / "mesh.obj").write_text("half")
    assert leftovers.clean_staging(tmp_path, mine) == [own]
    assert not own.exists() and (other / "mesh.obj").exists()


def test_own_stale_staging_folder_is_replaced_by_a_fresh_one(tmp_path: Path) -> None:
    stale = publish.staging_dir(tmp_path, "chair", "abc-1")
    stale.mkdir()
    (stale / "mesh.obj").write_text("half a mesh from a crashed run\n")
    _, published = publish.build_result(tmp_path, "chair", "abc-1", lambda f: sorted(os.listdir(f)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chair"] and list(published.iterdir()) == []


def test_published_result_is_found_only_with_the_same_bytes(tmp_path: Path) -> None:
    import hashlib

    write_result(_folder(tmp_path / "t_mug"), b"other picture")
    found = write_result(_folder(tmp_path / "t_mug-2"), b"picture")
    sha = hashlib.sha256(b"picture").hexdigest()
    assert publish.find_published(tmp_path, "t_mug", sha) == found
    assert publish.find_published(tmp_path, "t_cup", sha) is None
    assert publish.result_holds(found, sha) and not publish.result_holds(tmp_path / "t_mug", sha)
    (found / "source.png").write_bytes(b"edited by someone")
    assert not publish.result_holds(found, sha)


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("source", [
    "kitchen/shelf/mug.jpg",
    "x" * 251 + ".png",  # 255 bytes: the longest name a folder can hold
    "é" * 120 + ".png",  # 240 characters, 244 bytes of UTF-8
    "/".join(f"level{n}" for n in range(30)) + "/deep.png",
    os.fsdecode(b"caf\xe9 \xff.png"),  # not UTF-8
])
def test_result_names_fit_a_folder_name_and_keep_only_safe_characters(source: str) -> None:
    name = result_name_for(source, time.mktime((2026, 11, 25, 7, 15, 3, 0, 0, -1)))
    assert name.startswith("20261125-071503_")
    raw = name.encode()  # never a surrogate escape: encodes as UTF-8
    assert len(raw) <= RESULT_NAME_MAX_BYTES
    assert all(char.isalnum() or char in "._-" for char in name)
    assert len(publish.staging_dir(Path("/o"), name, "0123456789-123456").name.encode()) <= 255


def test_long_names_are_shortened_distinctly_keeping_the_extension() -> None:
    first, second = "a" * 300 + "1.png", "a" * 300 + "2.png"
    short = {shorten(first, 100), shorten(second, 100)}
    assert len(short) == 2 and all(len(n.encode()) <= 100 and n.endswith(".png") for n in short)
    assert shorten("mug.png", 100) == "mug.png"


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


def test_job_json_names_the_original_even_when_long(tmp_path: Path) -> None:
    """The record keeps the full original name; only folder names are shortened."""
    long_name = "é" * 120 + ".png"
    folder = _folder(tmp_path / result_name_for(long_name, 0))
    write_record(folder, {"source": long_name})
    assert json.loads((folder / "job.json").read_text())["source"] == long_name
