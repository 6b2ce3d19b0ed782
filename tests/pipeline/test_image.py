"""Load stage: every picture a person might drop becomes an upright RGBA image, and every file
that is not a usable picture is refused with one readable line. All files are real, made here
with Pillow (or by hand, for the broken ones)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recond.errors import InputError
from recond.inbox.dropped import read_source
from recond.pipeline.image import decode_image

MAX_PIXELS = 60_000_000
MAX_BYTES = 50 * 1024 * 1024


def load(path: Path, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> np.ndarray:
    picture = decode_image(read_source(path, max_bytes).data, path.name, max_pixels)
    assert picture.mode == "RGBA"
    return np.asarray(picture)


def save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def noisy_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    """Noise compresses badly, so a file cut in half really is missing pixel data."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def assert_refused(path: Path, *words: str, **limits: int) -> str:
    with pytest.raises(InputError) as caught:
        load(path, **limits)
    message = str(caught.value)
    assert "\n" not in message
    assert path.name in message
    for word in words:
        assert word in message, message
    return message


# --- every mode becomes RGBA with the right pixels ---------------------------------------

def test_palette_png_keeps_its_colours(tmp_path: Path) -> None:
    picture = Image.new("P", (4, 2))
    picture.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    picture.putdata([0, 0, 1, 1, 1, 1, 0, 0])
    rgba = load(save(picture, tmp_path / "palette.png"))
    assert tuple(rgba[0, 0]) == (255, 0, 0, 255)
    assert tuple(rgba[0, 3]) == (0, 0, 255, 255)
    assert tuple(rgba[1, 0]) == (0, 0, 255, 255)


def test_palette_png_with_transparent_index_becomes_clear_alpha(tmp_path: Path) -> None:
    picture = Image.new("P", (2, 1))
    picture.putpalette([10, 20, 30, 200, 100, 50] + [0] * (254 * 3))
    picture.putdata([0, 1])
    rgba = load(save(picture, tmp_path / "cutout.png", transparency=0))
    assert rgba[0, 0, 3] == 0
    assert tuple(rgba[0, 1]) == (200, 100, 50, 255)


def test_grey_png_becomes_grey_rgb_opaque(tmp_path: Path) -> None:
    picture = Image.fromarray(np.array([[0, 77, 255]], np.uint8), mode="L")
    rgba = load(save(picture, tmp_path / "grey.png"))
    assert rgba[0].tolist() == [[0, 0, 0, 255], [77, 77, 77, 255], [255, 255, 255, 255]]


def test_grey_with_alpha_keeps_alpha(tmp_path: Path) -> None:
    picture = Image.fromarray(np.array([[[90, 0], [90, 255]]], np.uint8), mode="LA")
    rgba = load(save(picture, tmp_path / "grey_alpha.png"))
    assert rgba[0].tolist() == [[90, 90, 90, 0], [90, 90, 90, 255]]


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    # Pillow's plain convert() would clip every value above 255 to white.
    values = np.array([[0, 16384, 32768, 65535]], np.uint16)
    picture = Image.fromarray(values)
    assert picture.mode == "I;16"
    rgba = load(save(picture, tmp_path / "deep.png"))
    assert rgba[0, :, 0].tolist() == [0, 64, 128, 255]
    assert (rgba[0, :, 0] == rgba[0, :, 2]).all() and (rgba[..., 3] == 255).all()


def test_cmyk_tiff_becomes_rgb(tmp_path: Path) -> None:
    picture = Image.new("CMYK", (3, 1))
    picture.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])
    rgba = load(save(picture, tmp_path / "print.tif"))
    assert rgba[0].tolist() == [[255, 255, 255, 255], [0, 255, 255, 255], [0, 0, 0, 255]]


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    picture = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in ink
    rgba = load(save(picture, tmp_path / "print.jpg", quality=95))
    assert np.abs(rgba[8, 8, :3].astype(int) - (255, 0, 0)).max() <= 6
    assert (rgba[..., 3] == 255).all()


def test_rgba_png_is_kept_exactly(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgba = load(save(Image.fromarray(pixels, mode="RGBA"), tmp_path / "cutout.png"))
    assert np.array_equal(rgba, pixels)


def test_rgb_jpeg_becomes_opaque_rgba(tmp_path: Path) -> None:
    picture = Image.new("RGB", (16, 16), (30, 160, 90))
    rgba = load(save(picture, tmp_path / "photo.jpg", quality=95))
    assert rgba.shape == (16, 16, 4)
    assert np.abs(rgba[8, 8, :3].astype(int) - (30, 160, 90)).max() <= 3
    assert (rgba[..., 3] == 255).all()


def test_exif_orientation_turns_the_picture_upright(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high, red on the left half; orientation 6 means "turn 90 degrees
    # clockwise to view", so the upright picture is 20 x 40 with red on the top half.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    rgba = load(save(stored, tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95))
    assert rgba.shape[:2] == (40, 20)  # rows = height 40, columns = width 20
    assert rgba[5, 10, 0] > 200 and rgba[5, 10, 2] < 50
    assert rgba[35, 10, 2] > 200 and rgba[35, 10, 0] < 50


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = save(frames[0], tmp_path / "spin.gif", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(path).n_frames == 3
    rgba = load(path)
    assert tuple(rgba[4, 4]) == (255, 0, 0, 255)


# --- files that are not usable pictures are refused in one line ----------------------------

def test_zero_byte_file_is_refused_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert_refused(path, "empty")


def test_truncated_png_is_refused(tmp_path: Path) -> None:
    data = save(noisy_rgb(64, 64), tmp_path / "whole.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    assert_refused(path, "truncated")


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    data = save(noisy_rgb(64, 64), tmp_path / "whole.jpg", quality=90).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert_refused(path, "truncated")


def test_random_bytes_named_jpg_are_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_refused(path, "not an image")


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("shopping list:\n- milk\n- a 3D printer\n", encoding="utf-8")
    assert_refused(path, "not an image")


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A real 1x1 PNG whose IHDR is rewritten (with a valid CRC) to claim width x height."""
    data = bytearray(save(Image.new("RGB", (1, 1)), path).read_bytes())
    fields_start = 8 + 4 + 4  # signature, chunk length, chunk type "IHDR"
    fields = bytearray(data[fields_start: fields_start + 13])
    fields[0:8] = struct.pack(">II", width, height)
    data[fields_start: fields_start + 13] = fields
    data[fields_start + 13: fields_start + 17] = struct.pack(">I", zlib.crc32(b"IHDR" + fields))
    path.write_bytes(bytes(data))
    return path


def test_header_declaring_a_huge_size_is_refused_as_a_bomb(tmp_path: Path) -> None:
    path = png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    assert path.stat().st_size < 100
    assert_refused(path, "decompression bomb")


def test_pixel_limit_set_above_pillows_default_is_the_one_applied(tmp_path: Path) -> None:
    # 9600 x 9600 = 92 MP: over Pillow's default, under the 200 MP setting. The file holds no
    # pixel data, so once admitted it must be refused as truncated, not as a bomb.
    path = png_claiming(tmp_path / "large.png", 9600, 9600)
    assert_refused(path, "truncated", max_pixels=200_000_000)


def test_small_file_over_the_pixel_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    path = save(Image.new("L", (2000, 1500)), tmp_path / "plain.png")
    assert path.stat().st_size < 20_000  # tiny on disk, 3 megapixels once decoded
    assert_refused(path, "2000x1500", "max_image_pixels", max_pixels=1_000_000)


def test_file_over_the_byte_limit_is_refused_unread(tmp_path: Path) -> None:
    path = save(noisy_rgb(64, 64), tmp_path / "big.png")
    assert_refused(path, "limit", "max_file_bytes", max_bytes=path.stat().st_size - 1)
