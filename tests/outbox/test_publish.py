"""Staging and publishing on real folders: the contract every caller relies on, tested here once
(a result appears in one step, never half, never over another; found again only with its bytes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recond.outbox import publish
from recond.pipeline.record import write_record


def write_result(folder: Path, data: bytes) -> Path:
    """The files of a finished result that publishing reads: source.* and job.json."""
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
