"""Building the warm pipeline: the libraries that must load on the main thread, the first start's
downloads (the TripoSR weights of a hub id, with a percentage for `reconctl status`, and rembg's
model, finished before any job starts: a job never waits on a download), then the model itself.

Every front end that runs jobs builds its pipeline here: the daemon's worker, ``reconctl
process``, the Ray device actors and the benchmarks. torch's CPU set-up for every process that
runs parts of jobs is recond.pipeline.tuning's (the Pipeline applies it when it is made).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from recond.config import ModelSettings
from recond.logging import get_logger
from recond.pipeline.contract import WarmPipeline

log = get_logger("recond.pipeline.warm")


def fetch_missing_models(settings: ModelSettings, report: Callable[[str], None]) -> None:
    """Download what is missing; ``report`` gets lines like ``downloading model.ckpt: 42%``.

    Raises ModelLoadError when the TripoSR weights are neither cached nor downloadable; a rembg
    model that cannot be fetched is only logged (GrabCut stands in).
    """
    from recond.pipeline.background import download_rembg_model
    from recond.triposr.hub import cached_files, download_files, is_hub_id

    def percent_reporter(what: str, first_line: str) -> Callable[[str, float], None]:
        shown: list[tuple[str, int]] = []  # the last step reported

        def progress(filename: str, fraction: float) -> None:
            step = (filename, int(fraction * 100))
            if not shown:
                log.info(first_line, model=what)
            if step not in shown:  # one database write per percent, not per chunk
                shown[:] = [step]
                report(f"downloading {what} {filename}: {step[1]}%")

        return progress

    if is_hub_id(settings.model) and cached_files(settings.model) is None:
        download_files(settings.model, percent_reporter(
            settings.model, "downloading the model weights (once; later starts use the cache)"))
    rembg_progress = percent_reporter("rembg", "downloading the background model (once)")
    problem = download_rembg_model(
        settings, lambda fraction: rembg_progress(f"{settings.rembg_model}.onnx", fraction))
    if problem:
        log.warning(problem)

def load_main_thread_libraries() -> None:
    """Import here, on the main thread, the pipeline's libraries whose first import must not be on
    the worker thread, which ends before the process does: pymeshlab (recond.pipeline.topology
    says why). The rest of the pipeline still loads on the worker thread, when it is built."""
    importlib.import_module("pymeshlab")


def build_pipeline(settings: ModelSettings,
                   report: Callable[[str], None] = lambda line: None) -> WarmPipeline:
    """The real, warm pipeline (imported here: torch loads in the worker thread, not at start-up),
    after the first start's downloads (``report`` gets their progress lines). The Pipeline tunes
    torch itself (recond.pipeline.tuning), so that a Pipeline made in Python runs as fast as this one."""
    from recond.pipeline.runner import Pipeline

    fetch_missing_models(settings, report)
    return Pipeline(settings)
