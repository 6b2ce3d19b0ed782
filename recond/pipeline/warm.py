"""Building the warm pipeline: the libraries that must load on the main thread, the first start's
downloads (the TripoSR weights of a hub id, with a percentage for `reconctl status`, and rembg's
model, finished before any job starts: a job never waits on a download), then the model itself.

Every front end that runs jobs builds its pipeline here: the daemon's worker, ``reconctl
process``, the Ray device actors and the benchmarks.
"""

from __future__ import annotations

import importlib
import os
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


def tune_torch(threads: int | None = None) -> None:
    """Set torch's CPU knobs the same way in every process and thread that runs parts of jobs
    (issue 26: `reconctl process` and a Python Pipeline ran 3-4x slower than the daemon on one
    picture). Call it before torch's first parallel work in the thread: its thread pool inherits
    the flag.

    - Denormal floats are flushed to zero: the decoder's and the renderer's tiny activations fall
      into that range, where each operation costs up to ~100x on x86 (an FPU flag per thread;
      torch.set_flush_denormal); flushing them brought the issue's run from 61 s to 23 s.
    - ``threads``: torch's intra-op threads (None leaves them): see ``cpu_threads``.
    """
    import torch

    torch.set_flush_denormal(True)
    if threads is not None:
        torch.set_num_threads(threads)


def cpu_threads(beside: int = 0) -> int:
    """Intra-op threads for a device part on the CPU: the CPUs this process may use
    (sched_getaffinity, not torch's count of the machine's cores) less the processes that run
    beside it; OpenMP threads that wait on cores they share ran 2-3x slower than alone
    (bench_throughput.py on 2 CPUs)."""
    return max(1, len(os.sched_getaffinity(0)) - beside)


def build_pipeline(settings: ModelSettings,
                   report: Callable[[str], None] = lambda line: None) -> WarmPipeline:
    """The real, warm pipeline (imported here: torch loads in the worker thread, not at start-up),
    after the first start's downloads (``report`` gets their progress lines), with torch tuned
    (``tune_torch``; an executor with host processes beside it sets fewer threads)."""
    from recond.pipeline.runner import Pipeline

    fetch_missing_models(settings, report)
    tune_torch(cpu_threads() if settings.resolved_device() == "cpu" else None)
    return Pipeline(settings)
