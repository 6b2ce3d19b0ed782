"""Result and upload names on disk: they fit a folder name, keep only safe characters, stay distinct
when shortened, and the record keeps the original."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from recond.names import RESULT_NAME_MAX_BYTES, result_name_for, shorten
from recond.outbox import publish
from recond.pipeline.record import write_record


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


def test_job_json_names_the_original_even_when_long(tmp_path: Path) -> None:
    """The record keeps the full original name; only folder names are shortened."""
    long_name = "é" * 120 + ".png"
    folder = _folder(tmp_path / result_name_for(long_name, 0))
    write_record(folder, {"source": long_name})
    assert json.loads((folder / "job.json").read_text())["source"] == long_name
