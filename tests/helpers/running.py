"""A worker and an intake running for real on a test's folders, with a stand-in pipeline: how the
nothing-lost and share-fault tests drive recond without a model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner

from helpers.stand_in import StandInPipeline

from recond.cli import cli
from recond.config import Settings
from recond.errors import InputError
from recond.inbox.intake import Intake
from recond.pipeline.contract import SourcePicture
from recond.store import Store
from recond.worker import Worker


class PickyPipeline(StandInPipeline):
    """The stand-in, refusing files whose bytes start with b"corrupt" as the real one would."""

    def device_part(self, source: SourcePicture, job=None, report=None):
        if source.data.startswith(b"corrupt"):
            raise InputError(f"{source.name} is truncated or corrupt")
        return super().device_part(source, job, report)


@contextmanager
def watching(settings: Settings, store: Store) -> Iterator[Intake]:
    """Intake alone on ``store``: files are queued, nothing runs."""
    intake = Intake(settings, store)
    intake.start()
    try:
        yield intake
    finally:
        intake.stop()


@contextmanager
def running(settings: Settings, pipeline: StandInPipeline | None = None,
            store: Store | None = None) -> Iterator[tuple[Store, Intake, Worker]]:
    """Intake and worker on one store, wired as the daemon wires them."""
    store = store or Store(settings.db_path)
    intake: Intake | None = None

    def file_changed(path: Path) -> None:
        if intake is not None:
            intake.consider(path)

    worker = Worker(settings, store, pipeline_factory=lambda s: pipeline or StandInPipeline(),
                    on_file_changed=file_changed)
    worker.recover()
    intake = Intake(settings, store, on_enqueued=lambda job: worker.wake())
    worker.start()
    intake.start()
    try:
        yield store, intake, worker
    finally:
        intake.stop()
        worker.stop()


def states(store: Store) -> dict[str, str]:
    return {job.source: job.state for job in store.jobs(limit=1000)}


def reconctl(settings: Settings, *arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(arguments), env={
        "RECOND_INBOX": str(settings.inbox), "RECOND_OUTBOX": str(settings.outbox),
        "RECOND_STATE_DIR": str(settings.state_dir)})
    return result.exit_code, result.output
