"""Operations under a folder that never leave it: '..', absolute names and links on the way are refused
by both resolvers (openat2 and the component walk)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from recond.shares import beneath


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways recond.shares.beneath resolves a path: the kernel's openat2, and the descriptor walk
    it falls back to on kernels without it."""
    monkeypatch.setattr(beneath, "_openat2_works", request.param == "openat2")
    return request.param


def test_beneath_refuses_dotdot_absolute_and_links_on_the_way(tmp_path: Path, resolver: str) -> None:
    (tmp_path / "inbox" / "sub").mkdir(parents=True)
    (tmp_path / "inbox" / "sub" / "a.png").write_bytes(b"inside")
    (tmp_path / "outside.png").write_bytes(b"outside")
    (tmp_path / "inbox" / "up").symlink_to(tmp_path)
    with beneath.opened(beneath.open_root(tmp_path / "inbox")) as root:
        for escaping in ("../outside.png", "/etc/passwd", "up/outside.png", "sub/../../outside.png", "up"):
            with pytest.raises(beneath.LinkOnTheWay):
                os.close(beneath.open_beneath(root, escaping, os.O_RDONLY))
        with beneath.opened(beneath.open_beneath(root, "sub/a.png", os.O_RDONLY)) as inside:
            assert os.read(inside, 100) == b"inside"
