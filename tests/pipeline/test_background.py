"""Background stage: a real alpha channel is kept, and without the rembg model on disk the
remover falls back to GrabCut (with a warning) instead of trying a download.

rembg cannot download its model here (no internet), and no u2net.onnx is shipped: every test
points rembg_home at an empty folder, which is also what a fresh offline install looks like.
The rembg path itself runs on a tiny u2net.onnx written by the test (darkness as the mask),
through a real rembg session and onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rembg
from PIL import Image

from helpers.paths import SHARED
from recond.config import Settings, load_settings
from recond.pipeline.background import (
    BackgroundRemover,
    BackgroundUnavailable,
    _rembg_session_class,
    has_real_alpha,
    named_home_places,
    rembg_model_status,
)

EXAMPLES = SHARED / "examples"


def example(name: str) -> Image.Image:
    path = EXAMPLES / name
    if not path.is_file():
        pytest.skip(f"example picture {path} not found (../shared beside the repository)")
    return Image.open(path).convert("RGBA")


@pytest.fixture
def offline_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings whose rembg home is an empty folder; U2NET_HOME is restored afterwards
    (the remover hands rembg_home to rembg through that variable)."""
    home = tmp_path / "rembg_home"
    home.mkdir()
    monkeypatch.setenv("U2NET_HOME", str(home))

    def make(**overrides: object) -> Settings:
        return load_settings(rembg_home=home, **overrides)

    return make


def alpha_of(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture.convert("RGBA"))[..., 3]


def test_cut_out_picture_has_real_alpha() -> None:
    assert has_real_alpha(example("chair.png"))


def test_fully_opaque_alpha_is_not_real_alpha() -> None:
    assert not has_real_alpha(Image.new("RGBA", (32, 32), (10, 200, 30, 255)))
    assert not has_real_alpha(Image.new("RGB", (32, 32), (10, 200, 30)))


def test_status_says_where_it_looked_for_the_missing_rembg_model(offline_settings) -> None:
    settings = offline_settings()
    status = rembg_model_status(settings)
    assert not status.available
    home = str(settings.rembg_home.resolve())
    assert str(status.path).startswith(home)
    assert status.path.name == "u2net.onnx"
    assert str(status.path) in status.message and "not found" in status.message


@pytest.mark.parametrize("model", ["u2net", "isnet-general-use"])
def test_the_places_looked_in_without_rembg_are_rembgs_own(offline_settings, model: str) -> None:
    """rembg_model_status answers "not found" in rembg_home without importing rembg; the two
    places it tries must be the two rembg itself looks in, for any model."""
    settings = offline_settings(rembg_model=model)
    rembg_model_status(settings)  # hands rembg_home to rembg (U2NET_HOME)
    session_class = _rembg_session_class(model)
    assert named_home_places(settings) == (Path(session_class.model_dir()) / f"{model}.onnx",
                                           Path(session_class.legacy_home()) / f"{model}.onnx")


@pytest.mark.parametrize("where", ["models", "flat"])
def test_status_finds_a_model_file_in_either_place_of_rembg_home(offline_settings, where: str) -> None:
    settings = offline_settings()
    expected, legacy = named_home_places(settings)
    placed = expected if where == "models" else legacy
    placed.parent.mkdir(parents=True, exist_ok=True)
    placed.write_bytes(b"placeholder")
    status = rembg_model_status(settings)
    assert status.available and status.path.resolve() == placed.resolve()


def test_status_finds_a_model_file_placed_in_rembg_home(offline_settings) -> None:
    # Only the lookup is checked: the file is a placeholder, never loaded as a session.
    settings = offline_settings()
    placed = settings.rembg_home / "u2net.onnx"
    placed.write_bytes(b"placeholder")
    status = rembg_model_status(settings)
    assert status.available
    assert status.path.resolve() == placed.resolve()


def test_auto_without_rembg_model_falls_back_to_grabcut_with_a_warning(offline_settings) -> None:
    remover = BackgroundRemover(offline_settings(background="auto"))
    assert remover.method == "grabcut"
    cutout, method, warnings = remover.remove(example("teapot.png"))
    assert method == "grabcut"
    assert len(warnings) == 1 and "GrabCut" in warnings[0] and "rembg" in warnings[0]
    alpha = alpha_of(cutout)
    height, width = alpha.shape
    centre = alpha[height * 9 // 20: height * 11 // 20, width * 9 // 20: width * 11 // 20]
    assert centre.min() == 255
    corner = height // 10
    for block in (alpha[:corner, :corner], alpha[:corner, -corner:],
                  alpha[-corner:, :corner], alpha[-corner:, -corner:]):
        assert block.max() == 0


def test_grabcut_recovers_a_cut_out_flattened_onto_white(offline_settings) -> None:
    original = example("chair.png")
    flattened = Image.alpha_composite(Image.new("RGBA", original.size, "white"), original)
    flattened = flattened.convert("RGB").convert("RGBA")
    assert not has_real_alpha(flattened)
    cutout, method, _ = BackgroundRemover(offline_settings()).remove(flattened)
    assert method == "grabcut"
    found, truth = alpha_of(cutout) > 127, alpha_of(original) > 127
    overlap = (found & truth).sum() / (found | truth).sum()
    assert overlap > 0.85


def test_auto_keeps_a_real_alpha_channel_untouched(offline_settings) -> None:
    original = example("robot.png")
    cutout, method, warnings = BackgroundRemover(offline_settings()).remove(original)
    assert (method, warnings) == ("alpha", [])
    assert np.array_equal(np.asarray(cutout), np.asarray(original))


def test_forced_rembg_without_its_model_fails_at_build_with_one_line(offline_settings) -> None:
    settings = offline_settings(background="rembg")
    with pytest.raises(BackgroundUnavailable) as caught:
        BackgroundRemover(settings)
    message = str(caught.value)
    assert "\n" not in message
    assert "rembg" in message and "not found" in message
    assert str(settings.rembg_home.resolve()) in message


def test_none_keeps_the_whole_frame_opaque(offline_settings) -> None:
    remover = BackgroundRemover(offline_settings(background="none"))
    assert remover.method == "none"
    original = example("chair.png")
    kept, method, warnings = remover.remove(original)
    assert (method, warnings) == ("none", [])
    assert alpha_of(kept).min() == 255
    assert np.array_equal(np.asarray(kept)[..., :3], np.asarray(original)[..., :3])


def test_alpha_mode_on_an_opaque_picture_warns_and_uses_the_whole_frame(offline_settings) -> None:
    remover = BackgroundRemover(offline_settings(background="alpha"))
    kept, method, warnings = remover.remove(example("teapot.png"))
    assert method == "alpha"
    assert len(warnings) == 1 and "transparency" in warnings[0]
    assert alpha_of(kept).min() == 255


def protobuf_field(number: int, value: int | str | bytes) -> bytes:
    """One protocol-buffers field (varint or length-delimited); enough to spell an ONNX model."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def tiny_u2net_onnx() -> bytes:
    """A ModelProto shaped like u2net (1x3x320x320 in, 1x1x320x320 out) whose mask is darkness:
    out = -mean over colour. Written by hand because the onnx package is not installed; field
    numbers from onnx/onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto, ValueInfoProto)."""
    f = protobuf_field

    def float_tensor(name: str, dims: list[int]) -> bytes:
        shape = b"".join(f(1, f(1, d)) for d in dims)
        return f(1, name) + f(2, f(1, f(1, 1) + f(2, shape)))  # elem_type 1 = FLOAT

    axes = f(1, "axes") + f(20, 7) + f(8, 1)  # attribute type 7 = INTS
    keepdims = f(1, "keepdims") + f(20, 2) + f(3, 1)  # attribute type 2 = INT
    mean = f(1, "input.1") + f(2, "mean") + f(4, "ReduceMean") + f(5, axes) + f(5, keepdims)
    negate = f(1, "mean") + f(2, "mask") + f(4, "Neg")
    graph = (f(1, mean) + f(1, negate) + f(2, "tiny_u2net")
             + f(11, float_tensor("input.1", [1, 3, 320, 320]))
             + f(12, float_tensor("mask", [1, 1, 320, 320])))
    return f(1, 8) + f(7, graph) + f(8, f(2, 13))  # IR version 8, opset 13 (axes as attribute)


def dark_disc_on_white() -> Image.Image:
    picture = np.full((200, 240, 3), 255, np.uint8)
    rows, cols = np.mgrid[:200, :240]
    picture[(rows - 100) ** 2 + (cols - 120) ** 2 < 60 ** 2] = (40, 30, 20)
    return Image.fromarray(picture).convert("RGBA")


def test_rembg_model_on_disk_gives_a_warm_session_used_for_every_picture(
        offline_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = offline_settings()
    (settings.rembg_home / "u2net.onnx").write_bytes(tiny_u2net_onnx())
    sessions: list[object] = []
    real_new_session = rembg.new_session
    monkeypatch.setattr(rembg, "new_session",
                        lambda *a, **k: sessions.append(real_new_session(*a, **k)) or sessions[-1])

    remover = BackgroundRemover(settings)
    assert remover.method == "rembg"
    for _ in range(2):
        cutout, method, notes = remover.remove(dark_disc_on_white())
        alpha = alpha_of(cutout)
        assert (method, notes) == ("rembg", [])
        assert alpha[100, 120] > 200 and alpha[5, 5] < 30 and alpha[195, 235] < 30
    assert len(sessions) == 1 and remover.session is sessions[0]
