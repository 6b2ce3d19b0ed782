"""The whole pipeline, end to end on real pictures: a warm Pipeline with the tiny checkpoint turns
each example into a complete, valid result folder, refuses bad files cleanly, reuses its model,
reports progress in stage order, and never leaves half a result behind.

The checkpoint is tiny and random (tests/conftest.py), so shapes are blobs; what is checked is
that every file is there and valid. rembg_home points at an empty folder (its model cannot be
downloaded here), so pictures without alpha take the GrabCut path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import trimesh
from helpers.paths import SHARED
from PIL import Image
from helpers.gltf import validate_glb

import recond.pipeline.background as background_module
from recond.config import JobSettings, Settings, load_settings
from recond.errors import InputError
from recond.inbox.dropped import read_source
from recond.outbox import publish
from recond.pipeline.mesh import NOT_A_SOLID
from recond.pipeline.runner import JobResult, Pipeline, Progress
from recond.triposr.model import TripoSR

EXAMPLES = SHARED / "examples"
EXAMPLE_PICTURES = sorted(EXAMPLES.glob("*.png")) or [
    pytest.param(None, marks=pytest.mark.skip(reason=f"example pictures not found in {EXAMPLES}"))
]
# A 256 texture holds 256 charts: the tiny model's 3k-face surfaces unwrap into 30-86, and at 128
# (64 charts) one example kept vertex colours on a CPU whose bfloat16 moved its surface a little.
SMALL = {"mc_resolution": 32, "texture_resolution": 256, "render_views": 4, "render_size": 64}
SMALL_JOB = JobSettings(**SMALL)
STAGE_ORDER = ["load", "background", "reconstruct", "grid", "mesh", "texture", "export", "render", "viewer",
               "record"]
RECORD_FIELDS = {"source", "sha256", "settings", "model", "device", "background", "warnings",
                 "stage_seconds", "vertices", "faces", "files"}


@pytest.fixture(scope="module")
def rembg_home(tmp_path_factory: pytest.TempPathFactory):
    """An empty rembg home; U2NET_HOME (which the remover sets for rembg) is restored after."""
    home = tmp_path_factory.mktemp("rembg_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("U2NET_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def small_settings(tiny_model_dir: Path, rembg_home: Path):
    def make(**overrides: object) -> Settings:
        return load_settings(model=str(tiny_model_dir), device="cpu", rembg_home=rembg_home,
                             **{**SMALL, **overrides})

    return make


@pytest.fixture(scope="module")
def pipeline(small_settings) -> Pipeline:
    return Pipeline(small_settings())


def run_published(pipeline: Pipeline, source: Path, outbox: Path, name: str, job: JobSettings,
                  progress=None) -> JobResult:
    """Pipeline.run in a staging folder, published by recond.layout, as the worker does it."""
    result, folder = publish.build_result(outbox, name, "test",
                                         lambda staging: pipeline.run(read_source(source, job.max_file_bytes),
                                                                      staging, job, progress=progress))
    result.result_dir = folder
    return result


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def frames_in(video: Path) -> int:
    return imageio_ffmpeg.count_frames_and_secs(str(video))[0]


def seconds_of(video: Path) -> float:
    return imageio_ffmpeg.count_frames_and_secs(str(video))[1]


def leftovers(outbox: Path) -> list[str]:
    return sorted(p.name for p in outbox.iterdir()) if outbox.exists() else []


# --- (a) every example picture becomes a complete, valid result --------------------------

@pytest.mark.parametrize("source", EXAMPLE_PICTURES, ids=lambda p: getattr(p, "stem", "none"))
def test_example_picture_becomes_a_complete_valid_result(pipeline: Pipeline, source: Path,
                                                         tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    result = run_published(pipeline, source, outbox, source.stem, SMALL_JOB)
    result_dir = outbox / source.stem
    assert isinstance(result, JobResult) and result.result_dir == result_dir
    assert leftovers(outbox) == [source.stem]  # no .partial left beside it

    views = SMALL_JOB.render_views
    renders = [f"render_{i:03d}.png" for i in range(views)]
    expected = {"source.png", "input.png", "mesh.obj", "mesh.mtl", "mesh_texture.png", "mesh.stl",
                "mesh.glb", "render.mp4", "index.html", "job.json", *renders}
    assert {p.name for p in result_dir.iterdir()} == expected

    assert (result_dir / "source.png").read_bytes() == source.read_bytes()
    assert Image.open(result_dir / "input.png").mode == "RGB"
    for name in renders:
        assert Image.open(result_dir / name).size == (64, 64)
    # One turn in video_seconds: the views spread over it, blended frames between (issue 26).
    assert frames_in(result_dir / "render.mp4") >= views
    assert abs(seconds_of(result_dir / "render.mp4") - SMALL_JOB.video_seconds) < 0.3

    record = json.loads((result_dir / "job.json").read_text())
    assert RECORD_FIELDS <= set(record)
    assert record == result.record | {"files": record["files"]}
    assert set(record["files"]) == expected
    assert record["source"] == source.name
    assert record["sha256"] == sha256_file(source)
    assert (record["model"], record["device"]) == (pipeline.model_id, "cpu")
    assert (record["dtype"], record["dtype_reason"]) == pipeline.settings.resolved_dtype()
    assert record["settings"]["mc_resolution"] == 32
    assert record["settings"]["texture_resolution"] == SMALL["texture_resolution"]
    assert record["settings"] | SMALL_JOB.model_dump() == record["settings"]  # job settings in full
    assert record["mesh"]["faces"] == record["faces"] <= record["mesh"]["marching_cubes_faces"]
    assert record["mesh"]["pieces"] > record["mesh"]["pieces_dropped"] >= 0
    assert record["texture"]["charts"] >= 1 and 0 < record["texture"]["atlas_use"] < 1
    assert set(STAGE_ORDER[:-1]) <= set(record["stage_seconds"])
    assert set(result.stage_seconds) == set(STAGE_ORDER)
    cut_out = Image.open(source).mode == "RGBA"
    assert record["background"] == ("alpha" if cut_out else "grabcut")
    # The tiny model's blobs run into the box's walls, so marching cubes leaves them open: the
    # result says it is no solid instead of claiming a printable STL.
    assert record["mesh"]["is_volume"] is False and NOT_A_SOLID in record["warnings"]
    assert bool(set(record["warnings"]) - {NOT_A_SOLID}) == (not cut_out)

    meshes = {name: trimesh.load(result_dir / name, force="mesh")
              for name in ("mesh.obj", "mesh.stl", "mesh.glb")}
    for name, mesh in meshes.items():
        assert len(mesh.faces) == record["faces"] > 0, name
        assert np.allclose(mesh.bounds, meshes["mesh.stl"].bounds, atol=1e-5), name
    obj_text = (result_dir / "mesh.obj").read_text()
    assert "\nvt " in obj_text and "mtllib mesh.mtl" in obj_text and "\nusemtl " in obj_text
    assert "map_Kd mesh_texture.png" in (result_dir / "mesh.mtl").read_text()
    assert Image.open(result_dir / "mesh_texture.png").size == (SMALL["texture_resolution"],) * 2
    assert validate_glb(result_dir / "mesh.glb")["issues"]["numErrors"] == 0


# --- (b) the default turntable length --------------------------------------------------

def test_default_turntable_is_thirty_views_in_a_four_second_video(pipeline: Pipeline, tmp_path: Path) -> None:
    source = EXAMPLES / "robot.png"
    if not source.is_file():
        pytest.skip(f"example picture {source} not found")
    default_views = SMALL_JOB.model_copy(
        update={"render_views": Settings.model_fields["render_views"].default})
    result = run_published(pipeline, source, tmp_path, "robot", default_views)  # same warm model
    video = result.result_dir / "render.mp4"
    assert abs(seconds_of(video) - 4.0) < 0.3 and 110 <= frames_in(video) <= 121  # 30 fps, blended
    assert len(list(result.result_dir.glob("render_*.png"))) == 30


def test_untextured_setting_gives_vertex_coloured_meshes(pipeline: Pipeline, small_settings,
                                                         tmp_path: Path) -> None:
    source = EXAMPLES / "teapot.png"
    if not source.is_file():
        pytest.skip(f"example picture {source} not found")
    dropped = tmp_path / "TEAPOT.PNG"  # an upper-case name, as cameras and phones write them
    dropped.write_bytes(source.read_bytes())
    settings = small_settings(bake_texture=False, background="none")
    result = run_published(Pipeline(settings, model=pipeline.model), dropped, tmp_path / "outbox", "teapot",
                                                          settings)
    names = {p.name for p in result.result_dir.iterdir()}
    assert {"mesh.obj", "mesh.stl", "mesh.glb", "source.png"} <= names
    assert not names & {"mesh.mtl", "mesh_texture.png"}
    assert (result.record["background"], result.record["textured"]) == ("none", False)
    first_vertex = next(line for line in (result.result_dir / "mesh.obj").read_text().splitlines()
                        if line.startswith("v "))
    assert len(first_vertex.split()) == 7  # v x y z r g b
    glb = trimesh.load(result.result_dir / "mesh.glb", force="mesh")
    assert glb.visual.kind == "vertex"
    assert validate_glb(result.result_dir / "mesh.glb")["issues"]["numErrors"] == 0


# --- (c) bad files are refused in one line and leave nothing behind ----------------------

def write_truncated_png(path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[:2000])


BAD_FILES = {
    "empty.png": lambda path: path.write_bytes(b""),
    "truncated.png": write_truncated_png,
    "notes.jpg": lambda path: path.write_text("not a picture\nat all\n"),
    "noise.jpg": lambda path: path.write_bytes(np.random.default_rng(1).bytes(5000)),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_refused_in_one_line_leaving_nothing(pipeline: Pipeline, tmp_path: Path,
                                                         name: str) -> None:
    source = tmp_path / name
    BAD_FILES[name](source)
    before = source.read_bytes()
    outbox = tmp_path / "outbox"
    with pytest.raises(InputError) as caught:
        run_published(pipeline, source, outbox, "bad", SMALL_JOB)
    assert "\n" not in str(caught.value) and name in str(caught.value)
    assert source.read_bytes() == before  # the source is never touched
    assert leftovers(outbox) == []


def test_one_pixel_picture_is_refused_in_one_line(pipeline: Pipeline, tmp_path: Path) -> None:
    source = tmp_path / "spacer.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(source)
    outbox = tmp_path / "outbox"
    with pytest.raises(InputError) as caught:
        run_published(pipeline, source, outbox, "spacer", SMALL_JOB)
    message = str(caught.value)
    assert message.strip() and "\n" not in message and "spacer.png" in message
    assert leftovers(outbox) == []


# --- (d) the model and background remover are built once ---------------------------------

def test_second_picture_reuses_the_warm_model(small_settings, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[TripoSR] = []
    status_checks: list[Settings] = []
    real_from_pretrained = TripoSR.from_pretrained
    real_status = background_module.rembg_model_status

    def counting_from_pretrained(*args, **kwargs) -> TripoSR:
        loaded.append(real_from_pretrained(*args, **kwargs))
        return loaded[-1]

    def counting_status(settings: Settings):
        status_checks.append(settings)
        return real_status(settings)

    monkeypatch.setattr(TripoSR, "from_pretrained", staticmethod(counting_from_pretrained))
    monkeypatch.setattr(background_module, "rembg_model_status", counting_status)
    warm = Pipeline(small_settings())
    encoded_by: list[int] = []
    real_encode = warm.model.encode
    monkeypatch.setattr(warm.model, "encode",
                        lambda *a, **k: encoded_by.append(id(warm.model)) or real_encode(*a, **k))
    remover = warm.background

    for name in ("chair.png", "teapot.png"):  # one cut-out, one needing GrabCut
        if not (EXAMPLES / name).is_file():
            pytest.skip(f"example picture {EXAMPLES / name} not found")
        run_published(warm, EXAMPLES / name, tmp_path, Path(name).stem, SMALL_JOB)

    assert len(loaded) == 1 and loaded[0] is warm.model
    assert encoded_by == [id(loaded[0])] * 2
    assert warm.background is remover and len(status_checks) == 1


# --- (e) progress ---------------------------------------------------------------------

def test_progress_reports_stages_in_order_up_to_complete(pipeline: Pipeline, tmp_path: Path) -> None:
    source = EXAMPLES / "horse.png"
    if not source.is_file():
        pytest.skip(f"example picture {source} not found")
    reports: list[Progress] = []
    run_published(pipeline, source, tmp_path, "horse", SMALL_JOB, progress=reports.append)

    stages_seen = [r.stage for i, r in enumerate(reports) if i == 0 or reports[i - 1].stage != r.stage]
    assert stages_seen == STAGE_ORDER
    overall = [r.overall for r in reports]
    assert all(later >= earlier for earlier, later in zip(overall, overall[1:]))
    assert overall[-1] == pytest.approx(1.0)
    assert all(0.0 <= r.stage_fraction <= 1.0 for r in reports)
    assert reports[-1].eta_s == pytest.approx(0.0, abs=1e-6)


# --- (g) a refused picture leaves nothing (staging and publishing: outbox/test_publish.py) -------

def test_picture_where_the_model_finds_nothing_is_refused_in_one_line(pipeline: Pipeline,
                                                                       tmp_path: Path) -> None:
    source = EXAMPLES / "chair.png"
    if not source.is_file():
        pytest.skip(f"example picture {source} not found")
    # A surface level no density reaches stands in for a picture the model sees nothing in.
    blind = SMALL_JOB.model_copy(update={"mc_threshold": 1e12})
    outbox = tmp_path / "outbox"
    with pytest.raises(InputError, match="found no object") as caught:
        run_published(pipeline, source, outbox, "chair", blind)
    assert "\n" not in str(caught.value)
    assert leftovers(outbox) == []
