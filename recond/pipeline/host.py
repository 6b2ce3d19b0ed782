"""The host part of a job: the device part's hand-off in, a complete result folder out, on CPU.

Marching cubes, floaters, simplify, unwrap + bake, export, turntable, viewer and job.json: the
~90 % of a job that needs no warm model (issue 14). It needs only its arguments and the folder
it is handed (a staging folder the worker publishes, or a temporary one on another host), never
the inbox, the job database or the outbox, so any process can run it. It loads neither rembg
nor the full model: the colour field is the model's small decoder rebuilt from its weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from PIL import Image

from recond import __version__
from recond.config import JobSettings, part_of
from recond.names import display_name, shown_file_name
from recond.pipeline.contract import JobResult
from recond.pipeline.export import export_meshes, orient_y_up
from recond.pipeline.handoff import DecoderWeights, DeviceOutput
from recond.pipeline.mesh import build_mesh
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
from recond.pipeline.progress import ProgressTracker, StageReport
from recond.pipeline.reconstruct import color_query
from recond.pipeline.record import write_record
from recond.pipeline.texture import bake_within_limits
from recond.pipeline.turntable import render_turntable, write_turntable
from recond.pipeline.viewer import write_viewer
from recond.triposr.decoder import NeRFDecoder
from recond.triposr.renderer import TriplaneField

HOST_DEVICE = "cpu"  # the host part's own torch work (colour queries, turntable) stays on the CPU


class DecoderField:
    """The model's point field from its decoder weights alone (what TripoSR.query answers on
    the CPU in float32, without the encoder's hundreds of MB)."""

    def __init__(self, weights: DecoderWeights) -> None:
        decoder = NeRFDecoder(weights.decoder)
        decoder.load_state_dict({name: torch.from_numpy(array) for name, array in weights.state.items()})
        self.field = TriplaneField(weights.renderer, decoder.eval())

    def query(self, scene_code: torch.Tensor, points: torch.Tensor, chunk_size: int) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return self.field.query(scene_code, points.float(), chunk_size)


def run_host_part(handoff: DeviceOutput, job: JobSettings, result_dir: Path,
                  report: StageReport | None = None, expected: Mapping[str, float] | None = None) -> JobResult:
    """Write the result's files into ``result_dir`` (an empty folder) from the device part's
    hand-off; ``report(stage, fraction)`` hears the progress, and each stage is held to the time
    limit its ``expected`` seconds give (None: the defaults; JobSettings' stage_limit_*), here in
    the process that runs the stage. Raises InputError when the picture holds no object, and
    StageTimedOut when a stage's child process ran past its limit."""
    settings = part_of(job, JobSettings)
    tracker = ProgressTracker(report, dict(handoff.stage_seconds), expected,
                              limit_factor=settings.stage_limit_factor, limit_floor_s=settings.stage_limit_floor_s)
    warnings = list(handoff.warnings)
    source_copy = source_copy_name(Path(handoff.source_name).suffix)
    (result_dir / source_copy).write_bytes(handoff.source_bytes)
    Image.fromarray(handoff.prepared).save(result_dir / INPUT_NAME)
    color_at = color_query(DecoderField(handoff.decoder), torch.from_numpy(handoff.scene_code),
                           settings.chunk_size)

    with tracker.stage("mesh") as progress:
        grid = torch.from_numpy(handoff.density.full_grid())
        mesh, mesh_facts = build_mesh(grid, color_at, handoff.decoder.renderer.radius, settings, progress)
        warnings += mesh_facts.warnings()

    atlas = None
    with tracker.stage("texture") as clock:
        if settings.bake_texture:
            mesh, atlas, notes = bake_within_limits(mesh, color_at, settings.texture_resolution, clock)
            warnings += notes

    with tracker.stage("export"):
        oriented = orient_y_up(mesh)
        export_meshes(oriented, result_dir)

    with tracker.stage("render") as clock:
        frames = render_turntable(oriented, settings.render_views, settings.render_size,
                                  device=HOST_DEVICE, progress=clock, closed=mesh_facts.is_volume)
        write_turntable(frames, result_dir, settings.video_fps, clock, settings.video_seconds)

    with tracker.stage("viewer"):
        downloads = _download_order(result_dir)
        title = shown_file_name(display_name(handoff.source_folder), display_name(handoff.source_name))
        write_viewer(result_dir, oriented, downloads, title=title, video=VIDEO_NAME)

    facts = handoff.model_facts
    record = {
        "recond_version": __version__,
        "source": handoff.source_name,
        "source_copy": source_copy,
        "sha256": handoff.sha256,
        "model": facts["model"],
        "device": facts["device"],
        "dtype": facts["dtype"],
        "dtype_reason": facts.get("dtype_reason"),
        "background": handoff.background,
        "warnings": warnings,
        "vertices": int(len(oriented.vertices)),
        "faces": int(len(oriented.faces)),
        "mesh": mesh_facts.as_record(),
        "textured": atlas is not None,
        "texture": atlas.as_record() if atlas else None,
        # What went from the device part (the warm model) to this host part, and its size.
        "handoff": handoff.as_record(),
        # Everything that shaped the result: the warm parts' settings and this job's, in full.
        "settings": {**facts["settings"], **settings.model_dump(mode="json")},
    }
    with tracker.stage("record"):
        record["stage_seconds"] = dict(tracker.stage_seconds)
        write_record(result_dir, record)
    return JobResult(result_dir, warnings, dict(tracker.stage_seconds), record)


def _download_order(result_dir: Path) -> list[str]:
    """The files a person would want first: the GLB, other meshes, the video, then the rest."""
    first = [GLB_NAME, OBJ_NAME, MTL_NAME, TEXTURE_NAME, STL_NAME, VIDEO_NAME, INPUT_NAME]
    present = {p.name for p in result_dir.iterdir() if p.is_file()}
    rest = sorted(name for name in present if name not in first and not name.startswith(FRAME_PREFIX))
    return [name for name in first if name in present] + rest + [RECORD_NAME]

