"""The issue-8 corpus of awkward and hostile image files, generated in memory.

Each case says what a correct loader must do with it: return an RGB image of a known size,
or raise ``ImageError``. ``probe`` runs any handler on a case with time and memory
measured, so the image loader, the demo's upload handler and the dataset readers are all
judged on the same files by the same rule.
"""

from __future__ import annotations

import io
import random
import resource
import struct
import sys
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from PIL import Image

from ..errors import ImageError


@dataclass(frozen=True)
class Expectation:
    """``outcome`` "image": an RGB image of ``size`` (width, height); "model": a loaded model (a
    checkpoint); "error": a clear error (``ImageError``, or what ``probe`` is told counts as one);
    "any": a result or a clear error (a randomly damaged file), but never another exception."""

    outcome: Literal["image", "model", "error", "any"]
    size: tuple[int, int] | None = None
    why: str = ""


class BadFile(NamedTuple):
    name: str  # a file name with the extension a user would give it
    data: bytes
    expectation: Expectation


def encode(image: Image.Image, fmt: str, **save_kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_kwargs)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width x height`` RGB pixels, with a few hundred bytes of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def jpeg_bomb(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) is rewritten to claim ``width x height`` pixels."""
    data = bytearray(encode(noise(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def sixteen_bit_png(width: int = 48, height: int = 32) -> bytes:
    """A 16-bit greyscale PNG (mode I;16) with a left-to-right ramp over the full 0..65535 range."""
    ramp = np.linspace(0, 65535, width).round().astype(np.uint16)
    return encode(Image.fromarray(np.tile(ramp, (height, 1))), "PNG")


def cmyk_jpeg(width: int = 40, height: int = 24) -> bytes:
    """A CMYK JPEG of pure cyan ink: pixels must come out RGB cyan-ish, not inverted."""
    return encode(Image.new("CMYK", (width, height), (255, 0, 0, 0)), "JPEG", quality=95)


def exif_rotated_jpeg(width: int = 40, height: int = 20, orientation: int = 6) -> bytes:
    """A landscape JPEG whose EXIF orientation 6 says: display it rotated 90 degrees clockwise."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height))  # left half red
    exif = image.getexif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif, quality=95)


def ascii_orientation_jpeg(width: int = 40, height: int = 20, text: bytes = b"6") -> bytes:
    """A JPEG whose EXIF orientation is text (type ASCII), not a number: no rotation to apply."""
    data = exif_rotated_jpeg(width, height, 6)
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)  # big-endian ("MM"), as Pillow writes a JPEG's EXIF
    return data.replace(entry, struct.pack(">HHI", 0x0112, 2, 2) + text[:1] + b"\x00\x00\x00")


def palette_with_transparency(width: int = 12, height: int = 8) -> bytes:
    """A palette PNG whose index 0 is transparent (left half) and index 1 opaque green (right half)."""
    image = Image.new("P", (width, height), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (width // 2, 0, width, height))
    return encode(image, "PNG", transparency=0)


def animated_gif(width: int = 16, height: int = 16) -> bytes:
    """Two frames, red then blue: the loader must return the red first frame."""
    frames = [Image.new("RGB", (width, height), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def many_frame_gif(frames: int) -> bytes:
    """A 1 x 1 GIF of ``frames`` frames (a million fit in about 20 MB): its second frame's bytes repeated."""
    data = animated_gif(1, 1)
    first = data.index(b"\x21\xf9\x04")  # graphic control extension: one starts every frame
    second = data.index(b"\x21\xf9\x04", first + 1)
    return data[:second] + data[second:-1] * (frames - 1) + b"\x3b"  # the trailer ends the file


def truncated_animated_gif(into_second_frame: int) -> bytes:
    """An animated GIF cut ``into_second_frame`` bytes after the start of its second frame."""
    data = animated_gif()
    first = data.index(b"\x21\xf9\x04")  # graphic control extension: one starts every frame
    second = data.index(b"\x21\xf9\x04", first + 1)
    return data[: second + into_second_frame]


def tiff_with_float_strip_offsets() -> bytes:
    """A TIFF whose StripOffsets tag is typed DOUBLE: Pillow's decoder trips over a float offset."""
    data = bytearray(encode(noise(12, 9), "TIFF"))
    ifd = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        start = ifd + 2 + 12 * entry
        if struct.unpack("<H", data[start:start + 2])[0] == 273:  # StripOffsets
            data[start + 2:start + 4] = struct.pack("<H", 12)  # type DOUBLE
    return bytes(data)


def _zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.html", "<script>alert('polyglot')</script>")
    return buffer.getvalue()


def bad_file_corpus() -> list[BadFile]:
    """Every case of the corpus, in a fixed order; all generated, nothing read from disk."""
    jpeg = encode(noise(64, 48, seed=1), "JPEG", quality=90)
    png = encode(noise(64, 48, seed=2), "PNG")
    image, error = "image", "error"
    return [
        BadFile("truncated.jpg", jpeg[: len(jpeg) // 2], Expectation(error, why="JPEG cut in half")),
        BadFile("truncated_header.jpg", jpeg[:120], Expectation(error, why="JPEG cut inside its headers")),
        BadFile("truncated.png", png[: len(png) // 2], Expectation(error, why="PNG cut in half")),
        BadFile("truncated_header.png", png[:30], Expectation(error, why="PNG cut inside IHDR")),
        BadFile("empty.jpg", b"", Expectation(error, why="zero bytes")),
        BadFile("text.jpg", b"this is not a picture, just text named .jpg\n" * 20, Expectation(error, why="text")),
        BadFile("html_with_gif_magic.gif", b"GIF89a<html><script>alert(1)</script></html>",
                Expectation(error, why="GIF signature followed by HTML")),
        BadFile("one_pixel.png", encode(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"), Expectation(image, (1, 1))),
        BadFile("bomb_50000x50000.png", png_bomb(50_000, 50_000),
                Expectation(error, why="decompression bomb, 2.5 gigapixels claimed")),
        BadFile("bomb_8000x6000.png", png_bomb(8_000, 6_000),
                Expectation(error, why="over tscam's pixel limit, under Pillow's")),
        BadFile("bomb_60000x60000.jpg", jpeg_bomb(60_000, 60_000),
                Expectation(error, why="JPEG frame header claiming 3.6 gigapixels")),
        BadFile("gray16.png", sixteen_bit_png(), Expectation(image, (48, 32), "16-bit greyscale")),
        BadFile("cmyk.jpg", cmyk_jpeg(), Expectation(image, (40, 24), "CMYK JPEG")),
        BadFile("palette_transparency.png", palette_with_transparency(), Expectation(image, (12, 8))),
        BadFile("animated.gif", animated_gif(), Expectation(image, (16, 16), "first frame")),
        BadFile("exif_rotated.jpg", exif_rotated_jpeg(), Expectation(image, (20, 40), "EXIF orientation 6")),
        BadFile("wide_10000x2.png", encode(noise(10_000, 2), "PNG"), Expectation(image, (10_000, 2))),
        BadFile("tall_2x10000.png", encode(noise(2, 10_000), "PNG"), Expectation(image, (2, 10_000))),
        BadFile("rgba.png", encode(Image.new("RGBA", (10, 6), (0, 0, 0, 0)), "PNG"), Expectation(image, (10, 6))),
        BadFile("png_with_zip.png", png + _zip_archive(), Expectation(image, (64, 48), "PNG + zip polyglot")),
        BadFile("jpeg_with_html.jpg", jpeg + b"<html><script>alert(1)</script></html>",
                Expectation(image, (64, 48), "JPEG + HTML polyglot")),
        BadFile("truncated_animated.gif", truncated_animated_gif(4),
                Expectation(error, why="cut in the second frame's header")),
        BadFile("truncated_second_frame.gif", truncated_animated_gif(17),
                Expectation(error, why="cut in the second frame's data")),
        BadFile("float_strip_offsets.tif", tiff_with_float_strip_offsets(),
                Expectation(error, why="TIFF tag of the wrong type")),
        BadFile("plain.tif", encode(noise(30, 20), "TIFF"), Expectation(image, (30, 20))),
        BadFile("plain.webp", encode(noise(30, 20), "WEBP"), Expectation(image, (30, 20))),
    ]


def mutated_corpus(count: int, seed: int = 0) -> list[BadFile]:
    """``count`` random byte-level mutations (overwrite, delete, insert) of small valid images.

    Seeded, so a failure found once is found again; a correct loader returns an image or
    raises ImageError for each, nothing else.
    """
    frames = [noise(12, 9, seed=i) for i in range(3)]
    seeds = {
        "jpg": encode(frames[0], "JPEG"), "png": encode(frames[0], "PNG"), "gif": animated_gif(),
        "apng.png": encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "tif": encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]), "bmp": encode(frames[0], "BMP"),
        "webp": encode(frames[0], "WEBP"), "ico": encode(frames[0], "ICO"), "exif.jpg": exif_rotated_jpeg(),
        "cmyk.jpg": cmyk_jpeg(), "gray16.png": sixteen_bit_png(12, 9), "palette.png": palette_with_transparency(),
    }
    rng = random.Random(seed)
    names = sorted(seeds)
    cases = []
    for index in range(count):
        kind = rng.choice(names)
        data = bytearray(seeds[kind])
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(max(1, len(data)))
            action = rng.random()
            if action < 0.6:
                data[at:at + 1] = bytes([rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])])
            elif action < 0.8:
                del data[at:at + rng.randint(1, 16)]
            else:
                data[at:at] = rng.randbytes(rng.randint(1, 8))
        cases.append(BadFile(f"mutant_{index:05d}.{kind}", bytes(data), Expectation("any", why=f"mutated {kind}")))
    return cases


@dataclass
class Outcome:
    """What a handler did with one case, and whether that is what the case expects."""

    name: str
    expected: str
    result: str  # "image", "error" (ImageError) or "crash" (any other exception)
    detail: str
    seconds: float
    python_peak_bytes: int
    rss_growth_bytes: int

    @property
    def as_expected(self) -> bool:
        return self.result != "crash" if self.expected == "any" else self.result == self.expected


def _max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def probe(
    case: BadFile,
    handler: Callable[[bytes], Any],
    clear_errors: tuple[type[BaseException], ...] = (ImageError,),
    check: Callable[[BadFile, Any], tuple[str, str]] | None = None,
) -> Outcome:
    """Run ``handler(case.data)``, which must return the loaded RGB image; classify and measure it.

    ``clear_errors`` are the exceptions that count as a clear refusal (a dataset reader may
    add ``DatasetError``); any other exception is a crash. ``check`` classifies what the
    handler returned, for handlers that load something else than an image (a checkpoint).

    Memory is measured twice: tracemalloc sees Python and numpy allocations; the growth of the
    process's peak resident size also catches native (Pillow, torch) allocations.
    """
    rss_before = _max_rss_bytes()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        loaded = handler(case.data)
        result, detail = (check or _check_image)(case, loaded)
    except clear_errors as problem:
        result, detail = "error", str(problem)
    except Exception as problem:  # noqa: BLE001 - the point is to catch any crash and report it
        result, detail = "crash", f"{type(problem).__name__}: {problem}"
    seconds = time.perf_counter() - start
    _, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return Outcome(case.name, case.expectation.outcome, result, detail, seconds, python_peak,
                   _max_rss_bytes() - rss_before)


def _check_image(case: BadFile, image: Image.Image) -> tuple[str, str]:
    if not isinstance(image, Image.Image) or image.mode != "RGB":
        return "crash", f"handler returned {type(image).__name__} {getattr(image, 'mode', '')}, not an RGB image"
    expected = case.expectation.size
    if expected is not None and image.size != expected:
        return "crash", f"image of size {image.size}, expected {expected}"
    return "image", f"{image.width}x{image.height} RGB"


__all__ = ["BadFile", "Expectation", "Outcome", "bad_file_corpus", "mutated_corpus", "probe", "png_bomb",
           "jpeg_bomb", "sixteen_bit_png", "cmyk_jpeg", "exif_rotated_jpeg", "ascii_orientation_jpeg", "palette_with_transparency",
           "animated_gif", "many_frame_gif", "truncated_animated_gif", "tiff_with_float_strip_offsets", "encode", "noise"]
