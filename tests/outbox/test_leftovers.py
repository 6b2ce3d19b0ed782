"""A killed run's staging folders: unique per daemon and job, and only a daemon's own are cleaned."""

from __future__ import annotations

from pathlib import Path

from recond.outbox import leftovers, publish


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
