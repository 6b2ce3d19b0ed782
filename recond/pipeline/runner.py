"""The warm pipeline: built once (model and rembg session warm), then one picture in,
one complete result folder out, stage by stage, with progress.

The pipeline writes into the folder it is handed; where that folder lives and how it is
published is ``recond.layout``'s business (a private staging folder, renamed into the outbox when
complete). The source file is copied byte for byte and never touched.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from recond import __version__
from recond.config import JobSettings, ModelSettings, part_of
from recond.errors import InputError
from recond.layout import display_name
from recond.logging import Repeats, get_logger
from recond.pipeline.background import BackgroundRemover
from recond.pipeline.contract import JobResult, ProgressCallback, SourcePicture
from recond.pipeline.export import export_meshes, orient_y_up
from recond.pipeline.image import check_size, decode_image
from recond.pipeline.names import (
    FRAME_PREFIX,
    GLB_NAME,
    INPUT_NAME,
    MTL_NAME,
    OBJ_NAME,
    RECORD_NAME,
    STL_NAME,
    TEXTURE_NAME,
    VIDEO_NAME,
    source_copy_name,
)
from recond.pipeline.mesh import build_mesh
from recond.pipeline.progress import (Progress, ProgressTracker, expected_stage_seconds,
                                      remember_stage_seconds)
from recond.pipeline.reconstruct import color_query, reconstruct
from recond.pipeline.record import sha256_of_bytes, write_record
from recond.pipeline.texture import bake_texture
from recond.pipeline.turntable import render_turntable, write_turntable
from recond.pipeline.viewer import write_viewer
from recond.triposr.model import TripoSR
from recond.triposr.preprocess import prepare_image
from recond.upload_names import shown_file_name

__all__ = ["InputError", "JobResult", "Pipeline", "Progress"]

log = get_logger("recond.pipeline")

MIN_OBJECT_PIXELS = 8  # framing drops the last row and column, as upstream does: tiny crops vanish


class Pipeline:
    """One warm TripoSR model and background remover, reused for every picture.

    Built from the model settings only (a full Settings is narrowed to them), so what a job
    may change never reaches the warm parts; each run gets its job settings. With a
    ``stage_history`` folder (the daemon's state dir), each job's stage seconds are kept there
    and the next jobs' ETA comes from them.
    """

    def __init__(self, settings: ModelSettings, model: TripoSR | None = None,
                 stage_history: Path | None = None) -> None:
        settings = part_of(settings, ModelSettings)
        self.settings = settings
        self.stage_history = stage_history
        self._repeats = Repeats()
        self.device = settings.resolved_device()
        self.dtype = settings.resolved_dtype()
        self.model_id = settings.model
        self.model = model or TripoSR.from_pretrained(settings.model, device=self.device,
                                                      dtype=getattr(torch, self.dtype.name))
        self.background = BackgroundRemover(settings)
        self.background_method = self.background.method

    def run(self, source: SourcePicture, result_dir: Path, job: JobSettings,
            progress: ProgressCallback | None = None) -> JobResult:
        """Turn the picture ``source`` (its bytes, read and checked by the caller) into the files
        of a result inside ``result_dir`` (an empty folder the caller made and publishes:
        recond.layout); raises InputError for a bad picture."""
        expected = expected_stage_seconds(self.stage_history) if self.stage_history else None
        job = part_of(job, JobSettings)
        return self._build(source, Path(result_dir), job,
                           ProgressTracker(progress, expected, limit_factor=job.stage_limit_factor,
                                           limit_floor_s=job.stage_limit_floor_s))

    def _build(self, source: SourcePicture, result_dir: Path, settings: JobSettings,
               tracker: ProgressTracker) -> JobResult:
        warnings: list[str] = []

        with tracker.stage("load"):
            source_bytes = source.data
            check_size(source.name, len(source_bytes), settings.max_file_bytes)
            picture = decode_image(source_bytes, source.name, settings.max_image_pixels,
                                   settings.max_aspect_ratio)
            source_copy = source_copy_name(PurePosixPath(source.name).suffix)
            (result_dir / source_copy).write_bytes(source_bytes)

        with tracker.stage("background"):
            cutout, background_used, notes = self.background.remove(picture)
            warnings += notes
            prepared = _prepared_for_model(cutout, settings.foreground_ratio, source.name)
            Image.fromarray(np.round(prepared * 255).astype(np.uint8)).save(result_dir / INPUT_NAME)

        with tracker.stage("reconstruct") as report:
            scene_code = reconstruct(self.model, prepared, report)

        with tracker.stage("mesh") as report:
            mesh, mesh_facts = build_mesh(self.model, scene_code, settings, report)
            warnings += mesh_facts.warnings()

        atlas = None
        with tracker.stage("texture") as report:
            if settings.bake_texture:
                color_at = color_query(self.model, scene_code, settings.chunk_size)
                mesh, atlas = bake_texture(mesh, color_at, settings.texture_resolution, progress=report)

        with tracker.stage("export"):
            oriented = orient_y_up(mesh)
            export_meshes(oriented, result_dir)

        with tracker.stage("render") as clock:
            frames = render_turntable(oriented, settings.render_views, settings.render_size,
                                      device=self.device, progress=clock)
            write_turntable(frames, result_dir, settings.video_fps, clock)

        with tracker.stage("viewer"):
            downloads = _download_order(result_dir)
            title = shown_file_name(display_name(source.folder), display_name(source.name))
            write_viewer(result_dir, oriented, downloads, title=title, video=VIDEO_NAME)

        record = {
            "recond_version": __version__,
            "source": source.name,
            "source_copy": source_copy,
            "sha256": sha256_of_bytes(source_bytes),
            "model": self.model_id,
            "device": self.device,
            "dtype": self.dtype.name,
            "dtype_reason": self.dtype.reason,
            "background": background_used,
            "warnings": warnings,
            "vertices": int(len(oriented.vertices)),
            "faces": int(len(oriented.faces)),
            "mesh": mesh_facts.as_record(),
            "textured": bool(settings.bake_texture),
            "texture": atlas.as_record() if atlas else None,
            # Everything that shaped the result: the warm parts' settings and this job's, in full.
            "settings": {**self.settings.model_dump(mode="json"), **settings.model_dump(mode="json")},
        }
        with tracker.stage("record"):
            record["stage_seconds"] = dict(tracker.stage_seconds)
            write_record(result_dir, record)
        if self.stage_history:  # best effort: a full state disk never costs the result
            not_kept = remember_stage_seconds(self.stage_history, tracker.stage_seconds)
            if not_kept:
                self._repeats.log(log.warning, not_kept)
        return JobResult(result_dir, warnings, dict(tracker.stage_seconds), record)


def _prepared_for_model(cutout: Image.Image, foreground_ratio: float, name: str) -> np.ndarray:
    """prepare_image, with the pictures it cannot frame turned into a one-line refusal."""
    try:
        prepared = prepare_image(cutout, foreground_ratio)
    except ValueError as error:  # nothing visible after background removal
        raise InputError(f"{name}: {error}") from None
    if min(prepared.shape[:2]) < MIN_OBJECT_PIXELS:
        raise InputError(f"{name}: the object is only a few pixels across; recond needs a larger picture of it")
    return prepared


def _download_order(result_dir: Path) -> list[str]:
    """The files a person would want first: the GLB, other meshes, the video, then the rest."""
    first = [GLB_NAME, OBJ_NAME, MTL_NAME, TEXTURE_NAME, STL_NAME, VIDEO_NAME, INPUT_NAME]
    present = {p.name for p in result_dir.iterdir() if p.is_file()}
    rest = sorted(name for name in present if name not in first and not name.startswith(FRAME_PREFIX))
    return [name for name in first if name in present] + rest + [RECORD_NAME]
