"""Load stage: read a dropped file and turn it into one upright RGBA picture, or refuse it.

Anything Pillow reads is accepted (any mode, EXIF orientation, first frame of an animation);
everything else gets an :class:`InputError` that says in one sentence what is wrong, so the job
record explains itself without a traceback.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from recond.errors import InputError

# The only formats decoded: photo and bitmap formats Pillow reads itself. Not EPS/PS, which
# Pillow hands to Ghostscript (an outside interpreter running a dropped file), nor the rarer
# plugins nobody drops as a photo (issue 18).
PICTURE_FORMATS = ("PNG", "JPEG", "WEBP", "AVIF", "GIF", "BMP", "TIFF", "TGA", "PPM")  # JPEG reads MPO


@cache
def picture_extensions() -> frozenset[str]:
    """Extensions (lower case, with the dot) of the allowed formats: what intake takes."""
    Image.init()
    return frozenset(extension for extension, format_id in Image.registered_extensions().items()
                     if format_id in PICTURE_FORMATS and format_id in Image.OPEN)


def is_picture_name(name: str) -> bool:
    return Path(name).suffix.lower() in picture_extensions()


def check_size(name: str, size: int, max_bytes: int) -> None:
    """Refuse an empty file or one over max_file_bytes (the inbox and web uploads alike)."""
    if size == 0:
        raise InputError(f"{name} is empty (0 bytes)")
    if size > max_bytes:
        raise InputError(
            f"{name} is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit "
            "(setting max_file_bytes)"
        )



def open_image(stream: BinaryIO, name: str, max_pixels: int, n_bytes: int,
               max_aspect: float = 20.0) -> Image.Image:
    """Read only the header and refuse what is not a picture, is absurdly large, or so long and
    thin that framing it would pad it to a huge square.

    This is the sniff web uploads get before they enter the inbox, and the first step of
    :func:`decode_image`, so both refuse the same files with the same words.
    """
    try:
        with _pillow_bomb_check_off():
            image = Image.open(stream, formats=PICTURE_FORMATS)  # reads the header only
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image format recond can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(f"{name} is truncated or corrupt ({error})") from None
    width, height = image.size
    if width * height > max_pixels:
        bomb = " (a decompression bomb)" if n_bytes * 100 < width * height else ""
        raise InputError(
            f"{name} is {width}x{height} pixels{bomb}, over the {max_pixels:,}-pixel "
            "limit (setting max_image_pixels); refused before decoding"
        )
    if width == 0 or height == 0:
        raise InputError(f"{name} has no pixels")
    if max(width, height) / min(width, height) > max_aspect:
        raise InputError(
            f"{name} is {width}x{height} pixels, longer than {max_aspect:g} times its width "
            "(setting max_aspect_ratio); refused before decoding"
        )
    return image


def decode_image(data: bytes, name: str, max_pixels: int, max_aspect: float = 20.0) -> Image.Image:
    """Decode bytes into an RGBA picture, upright, refusing absurd sizes and shapes before decoding."""
    image = open_image(io.BytesIO(data), name, max_pixels, len(data), max_aspect)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.seek(0)  # an animation: its first frame
            image.load()
    except Image.DecompressionBombError:  # a later frame larger than the header said
        raise InputError(f"{name} holds a frame over Pillow's size limit (a decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(f"{name} is truncated or corrupt ({error})") from None
    return to_rgba(ImageOps.exif_transpose(image))


@contextmanager
def _pillow_bomb_check_off() -> Iterator[None]:
    """Pillow's own header-size check (default ~89.5 MP) would overrule the max_image_pixels
    setting; ours replaces it, on the same header, before any pixel is decoded."""
    default = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = default


def to_rgba(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGBA, keeping transparency and scaling deep greys to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Pillow's own conversion clips these to 255; scale the real range down instead.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(values.max(), 1.0)
        grey = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGBA")
    if image.mode == "RGBA":
        return image.copy()
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA")
    if image.mode in ("LA", "La", "RGBa", "PA"):
        return image.convert("RGBA")
    return image.convert("RGB").convert("RGBA")
