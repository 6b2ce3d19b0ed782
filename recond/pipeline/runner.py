"""The warm pipeline: built once (model and rembg session warm), then one picture in,
one complete result folder out, stage by stage, with progress.

A job has two parts (issue 14). The *device part* (here: load, background, encode, density
grid) needs the warm weights on their device; it returns a plain :class:`DeviceOutput`. The
*host part* (recond/pipeline/host.py: marching cubes to job.json) is CPU work that needs only
that hand-off, so an executor (recond/executors/) may run it in another process or on another
host while the device part serves the next picture. ``run`` does both here, one after the other.

The pipeline writes into the folder it is handed; where that folder lives and how it is
published is ``recond.outbox.publish``'s business (a private staging folder, renamed into the outbox when
complete). The source file is copied byte for byte and never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from recond.config import JobSettings, ModelSettings, part_of
from recond.errors import InputError
from recond.pipeline.background import BackgroundRemover
from recond.pipeline.contract import RUN_HOST_PART, JobResult, ProgressCallback, SourcePicture
from recond.pipeline.handoff import DecoderWeights, DensityBox, DeviceOutput
from recond.pipeline.image import check_size, decode_image
from recond.pipeline.progress import EtaEstimate, Progress, ProgressTracker, StageReport
from recond.pipeline.reconstruct import reconstruct
from recond.pipeline.record import sha256_of_bytes
from recond.pipeline.tuning import freeze_heap, host_threads, tune_torch
from recond.triposr.model import TripoSR
from recond.triposr.preprocess import prepare_image

__all__ = ["InputError", "JobResult", "Pipeline", "Progress"]

MIN_OBJECT_PIXELS = 8  # framing drops the last row and column, as upstream does: tiny crops vanish


class Pipeline:
    """One warm TripoSR model and background remover, reused for every picture.

    Built from the model settings only (a full Settings is narrowed to them), so what a job
    may change never reaches the warm parts; each run gets its job settings.
    """

    def __init__(self, settings: ModelSettings, model: TripoSR | None = None) -> None:
        settings = part_of(settings, ModelSettings)
        tune_torch()  # before the weights load: torch's threads inherit the denormal flag
        self.settings = settings
        self.device = settings.resolved_device()
        self.dtype = settings.resolved_dtype()
        self.model_id = settings.model
        self.model = model or TripoSR.from_pretrained(settings.model, device=self.device,
                                                      dtype=getattr(torch, self.dtype.name))
        self.background = BackgroundRemover(settings)
        self.background_method = self.background.method
        self.decoder = DecoderWeights(self.model.config.decoder, self.model.config.renderer, {
            name: tensor.detach().float().cpu().numpy() for name, tensor in self.model.decoder.state_dict().items()})
        freeze_heap()  # the warm parts stay: later collections scan a job's objects only

    host_part = RUN_HOST_PART  # imported where it runs (contract.HostPartByName)

    def run(self, source: SourcePicture, result_dir: Path, job: JobSettings,
            progress: ProgressCallback | None = None,
            expected: Mapping[str, float] | None = None) -> JobResult:
        """Turn the picture ``source`` (its bytes, read and checked by the caller) into the files
        of a result inside ``result_dir`` (an empty folder the caller made and publishes:
        recond.outbox.publish), both parts here, one after the other; ``expected``: stage seconds for
        the ETA and the stages' time limits. Raises InputError for a bad picture."""
        job = part_of(job, JobSettings)
        report = EtaEstimate(progress, expected)
        handoff = self.device_part(source, job, report)
        with host_threads():  # as the daemon's host processes run it (tuning.py)
            return RUN_HOST_PART(handoff, job, Path(result_dir), report, expected)

    def device_part(self, source: SourcePicture, job: JobSettings,
                    report: StageReport | None = None) -> DeviceOutput:
        """The picture's bytes -> what the host part needs: the cut-out picture, the scene code,
        the density grid around the surface and the decoder. Raises InputError for a bad picture."""
        settings = part_of(job, JobSettings)
        tracker = ProgressTracker(report)
        warnings: list[str] = []

        with tracker.stage("load"):
            check_size(source.name, len(source.data), settings.max_file_bytes)
            picture = decode_image(source.data, source.name, settings.max_image_pixels,
                                   settings.max_aspect_ratio)

        with tracker.stage("background"):
            cutout, background_used, notes = self.background.remove(picture)
            warnings += notes
            prepared = _prepared_for_model(cutout, settings.foreground_ratio, source.name)

        with tracker.stage("reconstruct") as progress:
            scene_code = reconstruct(self.model, prepared, progress)

        with tracker.stage("grid") as progress:
            grid = self.model.density_grid(scene_code, settings.mc_resolution, settings.chunk_size,
                                           level=settings.mc_threshold, progress=progress)
            density = DensityBox.around_surface(grid.numpy(), settings.mc_threshold)
            if grid.shape[0] != settings.mc_resolution:  # isosurface.MAX_REFINED_SHARE
                warnings.append(f"the density field is noisy (its surface would fill more than a quarter of the "
                                f"{settings.mc_resolution}^3 grid), so it was sampled on a {grid.shape[0]}^3 grid")

        return DeviceOutput(
            source_name=source.name, source_folder=source.folder, source_bytes=source.data,
            sha256=sha256_of_bytes(source.data), prepared=np.round(prepared * 255).astype(np.uint8),
            background=background_used, warnings=warnings, scene_code=scene_code.float().cpu().numpy(),
            density=density, decoder=self.decoder, stage_seconds=dict(tracker.stage_seconds),
            model_facts={"model": self.model_id, "device": self.device, "dtype": self.dtype.name,
                         "dtype_reason": self.dtype.reason,
                         "settings": self.settings.model_dump(mode="json")})


def _prepared_for_model(cutout: Image.Image, foreground_ratio: float, name: str) -> np.ndarray:
    """prepare_image, with the pictures it cannot frame turned into a one-line refusal."""
    try:
        prepared = prepare_image(cutout, foreground_ratio)
    except ValueError as error:  # nothing visible after background removal
        raise InputError(f"{name}: {error}") from None
    if min(prepared.shape[:2]) < MIN_OBJECT_PIXELS:
        raise InputError(f"{name}: the object is only a few pixels across; recond needs a larger picture of it")
    return prepared
