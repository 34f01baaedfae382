"""Turn whatever a user hands us into the RGB image the model expects, or a clear error.

The pixel limit is checked from the header before any pixel is decoded, so a
decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

#: Largest image accepted, in pixels (width x height): about 8k x 5k.
MAX_PIXELS = 40_000_000
#: Largest file read from disk: files are read whole, so a multi-gigabyte file must not get that far.
MAX_FILE_BYTES = 512 * 2**20

ImageSource = str | Path | bytes | BinaryIO | Image.Image | np.ndarray

#: What Pillow's decoders raise on damaged files: besides OSError, a truncated GIF frame gives
#: IndexError or struct.error and a TIFF tag of the wrong type a TypeError (found by fuzzing).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error)


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An 8-bit RGB image, EXIF-rotated, transparency flattened onto white; first frame of an animation."""
    name = source_name(source)
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
    else:
        image = _open(source, name)
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{name} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(f"{name} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}")
    try:
        if getattr(image, "is_animated", False):
            image.seek(0)
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except DECODE_ERRORS as error:  # truncated or corrupt pixel data
        raise ImageError(f"{name}: image data is damaged or truncated: {error}") from error


def source_name(source: ImageSource) -> str:
    """How errors refer to a source: its path, or what kind of object it is."""
    if isinstance(source, (str, Path)):
        return str(source)
    return "the image" if isinstance(source, (Image.Image, np.ndarray)) else "the upload"


def read_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, judged from its metadata before it is opened.

    A directory, a FIFO or a device is never opened (a FIFO would block the reader), and a file
    over the limit is never read: the caller may be serving strangers.
    """
    try:
        status = os.stat(path)
    except (OSError, ValueError):  # missing, unreadable folder, or a NUL in the name
        status = None
    if status is None or not stat.S_ISREG(status.st_mode):
        raise ImageError(f"no image file at {path}")
    if status.st_size > max_bytes:
        raise ImageError(f"{path} is {status.st_size:,} bytes, over the file size limit of {max_bytes:,}")
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as error:
        raise ImageError(f"{path} could not be read: {error.strerror or error}") from error
    if len(data) > max_bytes:  # grew since it was measured
        raise ImageError(f"{path} is over the file size limit of {max_bytes:,} bytes")
    return data


def _open(source: str | Path | bytes | BinaryIO, name: str) -> Image.Image:
    if isinstance(source, (str, Path)):
        data: BinaryIO = io.BytesIO(read_file(source))
    elif isinstance(source, (bytes, bytearray)):
        data = io.BytesIO(source)
    else:
        data = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(data)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        if isinstance(error, UnidentifiedImageError):
            raise ImageError(f"{name} is not an image file PIL can read") from error
        raise ImageError(f"{name} is too large to decode safely: {error}") from error
    except DECODE_ERRORS as error:
        raise ImageError(f"{name} could not be read as an image: {error}") from error
    return image


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageError(f"an image array must be H x W, H x W x 3 or H x W x 4, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = _to_uint8(array.astype(np.float64))
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    top = values.max() if values.size else 1.0
    scale = 255.0 if top <= 1.0 else 255.0 / (65535.0 if top > 255 else 255.0)
    return np.clip(values * scale, 0, 255).round().astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB for any PIL mode: 16-bit and float greys rescaled, CMYK converted, alpha on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image, dtype=np.float64))).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
