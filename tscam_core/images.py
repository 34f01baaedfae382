"""Turn whatever a user hands us into the RGB image the model expects, or a clear error.

The pixel limit is checked from the header before any pixel is decoded, so a
decompression bomb costs nothing. Memory is bounded too: beside the file's bytes,
``load_image`` holds at most the decoded image in its own mode and the RGB result
(4 bytes a pixel in Pillow), plus one band of ``BAND_PIXELS`` pixels converted at a time
(an EXIF rotation briefly holds a second copy of the decoded image). No full-size float
copy is made, nor a full-size intermediate while flattening transparency.
``python benchmarks/image_memory.py`` prints each kind of file's peak beside this bound.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

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
        image.load()  # here, where damaged pixel data becomes an ImageError, not in the caller's hands
        rotation = orientation(image)
        if rotation is not None:
            image = image.transpose(ORIENTATIONS[rotation])
        return to_rgb(image)
    except DECODE_ERRORS as error:  # truncated or corrupt pixel data
        raise ImageError(f"{name}: image data is damaged or truncated: {error}") from error


#: The transposition that shows an image upright, by EXIF orientation (1, upright, needs none).
ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def orientation(image: Image.Image) -> int | None:
    """The EXIF orientation ``load_image`` applies: 2..8, or None where there is none to apply (no tag,
    1, or an invalid value such as 99 or text, which is ignored)."""
    value = image.getexif().get(0x0112)
    return value if type(value) is int and value in ORIENTATIONS else None


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
            data = file.read(status.st_size + 1)  # read(n) allocates n bytes up front: ask for what is there
    except OSError as error:
        raise ImageError(f"{path} could not be read: {error.strerror or error}") from error
    if len(data) > status.st_size:  # grew since it was measured
        raise ImageError(f"{path} changed while it was read")
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
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8:
        out = np.empty(array.shape, np.uint8)
        top = float(array.max()) if array.size else 1.0
        for start, band in _uint8_bands(lambda start, stop: array[start:stop], array.shape, top):
            out[start:start + len(band)] = band
        array = out
    return Image.fromarray(array)


#: Pixels converted at a time where a conversion needs a wider type than the result (16-bit, float).
BAND_PIXELS = 1 << 20


def _uint8_bands(
    band: Callable[[int, int], np.ndarray], shape: tuple[int, ...], top: float
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, uint8 rows) of an image of ``shape`` read as ``band(start, stop)`` and scaled by the
    range ``top`` implies, one band at a time: the float copy is one band's, never the whole image's."""
    scale = 255.0 if top <= 1.0 else 255.0 / (65535.0 if top > 255 else 255.0)
    rows = max(1, BAND_PIXELS // max(1, int(np.prod(shape[1:], dtype=np.int64))))
    for start in range(0, shape[0], rows):
        values = np.array(band(start, min(start + rows, shape[0])), dtype=np.float64)
        values *= scale
        yield start, np.clip(values, 0, 255, out=values).round(out=values).astype(np.uint8)


#: Modes of more than 8 bits a channel: rescaled to 8 bits from the range their values use.
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
#: Modes with an alpha channel: flattened onto white.
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
#: Modes whose "transparency" (a transparent palette index or colour key) Pillow can turn into alpha.
KEYED_MODES = ("P", "L", "RGB")

Conversion = Literal["none", "rescale", "flatten", "cmyk", "convert"]

#: What a user is told about each conversion (None: a plain colour conversion, nothing lost or changed).
CONVERSION_NOTES: dict[Conversion, str | None] = {
    "none": None,
    "rescale": "{mode} image (more than 8 bits per pixel): rescaled to 8-bit RGB",
    "flatten": "transparent image: flattened onto white",
    "cmyk": "CMYK image: converted to RGB",
    "convert": None,
}


def conversion(image: Image.Image) -> Conversion:
    """How ``to_rgb`` turns ``image`` into RGB: the one table of modes that the notes follow too."""
    if image.mode in HIGH_DEPTH_MODES:
        return "rescale"
    if image.mode in ALPHA_MODES or (image.mode in KEYED_MODES and "transparency" in image.info):
        return "flatten"
    if image.mode == "RGB":
        return "none"
    return "cmyk" if image.mode == "CMYK" else "convert"


def conversion_note(image: Image.Image) -> str | None:
    """The note of ``image``'s conversion for a user, or None where there is nothing to say."""
    note = CONVERSION_NOTES[conversion(image)]
    return None if note is None else note.format(mode=image.mode)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB for any PIL mode: 16-bit and float greys rescaled, CMYK converted, alpha on white.

    Rescaling and flattening go in bands of rows into the result, so that the only full-size
    copy is the result itself.
    """
    kind = conversion(image)
    if kind == "none":
        return image
    width, height = image.size
    if kind == "rescale":
        out = Image.new("RGB", image.size)
        rows = _uint8_bands(lambda start, stop: np.asarray(image.crop((0, start, width, stop))),
                            (height, width), float(image.getextrema()[1]))
        for start, band in rows:
            out.paste(Image.fromarray(band).convert("RGB"), (0, start))
        return out
    if kind == "flatten":
        out = Image.new("RGB", image.size, (255, 255, 255))
        rows = max(1, BAND_PIXELS // width)
        for start in range(0, height, rows):
            band = image.crop((0, start, width, min(start + rows, height)))
            band = (band.convert("LA") if band.mode == "La" else band).convert("RGBA")  # Pillow has no La -> RGBA
            out.paste(band, (0, start), band)
        return out
    return image.convert("RGB")


#: Frames counted for the note on an animation: beyond, "more than" (a GIF may hold a million 1-pixel frames).
MAX_COUNTED_FRAMES = 1000


def conversion_notes(data: bytes) -> list[str]:
    """What ``load_image`` changed in a readable file, read from its header, for the user to know.

    The conversion, the EXIF orientation and the frames are judged by the rules ``load_image``
    follows (``conversion_note``, ``orientation``), so a note says only what was done.
    """
    with Image.open(io.BytesIO(data)) as image:
        notes = []
        try:  # counting frames reads every frame's header: a later frame may be damaged, the first was fine
            frames = count_frames(image, MAX_COUNTED_FRAMES)
        except (*DECODE_ERRORS, KeyError):
            notes.append("image with several frames, some damaged: the first frame is explained")
            frames = 1
        if frames is None:
            notes.append(f"animated image with more than {MAX_COUNTED_FRAMES:,} frames: the first frame is explained")
        elif frames > 1:
            notes.append(f"animated image with {frames} frames: the first frame is explained")
        note = conversion_note(image)
        if note is not None:
            notes.append(note)
        if orientation(image) is not None:
            notes.append("EXIF orientation applied: the image is shown upright")
    return notes


def count_frames(image: Image.Image, limit: int) -> int | None:
    """How many frames ``image`` holds, or None where it holds more than ``limit`` (counting stops
    there); leaves the image at its first frame."""
    if not getattr(image, "is_animated", False):
        return 1
    try:
        for frame in range(2, limit + 1):
            try:
                image.seek(frame)
            except EOFError:
                return frame
        return None
    finally:
        image.seek(0)
