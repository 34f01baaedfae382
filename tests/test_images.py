"""Safe image loading: every mode to the right RGB image, every bad file to a clear ImageError."""

from __future__ import annotations

import io
import os
import re
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tscam_core import MAX_PIXELS, ImageError, load_image
from tscam_core.images import conversion, orientation, read_file
from tscam_core.testing.bad_files import (
    animated_gif,
    ascii_orientation_jpeg,
    cmyk_jpeg,
    encode,
    exif_rotated_jpeg,
    jpeg_bomb,
    noise,
    palette_with_transparency,
    png_bomb,
    sixteen_bit_png,
)
from tscam_core.testing.image_memory import KINDS, load_peak


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def test_rgb_passes_through_from_every_source(tmp_path: Path):
    image = noise(20, 10)
    data = encode(image, "PNG")
    path = tmp_path / "noise.png"
    path.write_bytes(data)
    for source in (data, io.BytesIO(data), path, str(path), image, np.asarray(image)):
        np.testing.assert_array_equal(pixels(load_image(source)), np.asarray(image))


def test_rgba_is_flattened_onto_white():
    rgba = Image.new("RGBA", (4, 2), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    out = pixels(load_image(encode(rgba, "PNG")))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[1, 1]) == (255, 255, 255)  # fully transparent -> the white background
    assert all(abs(v - 127) <= 1 for v in out[0, 1])  # half-transparent black over white


def test_la_and_l():
    la = Image.new("LA", (3, 3), (40, 255))
    la.putpixel((2, 2), (40, 0))
    out = pixels(load_image(encode(la, "PNG")))
    assert tuple(out[0, 0]) == (40, 40, 40) and tuple(out[2, 2]) == (255, 255, 255)
    gray = pixels(load_image(encode(Image.new("L", (3, 2), 77), "PNG")))
    assert gray.shape == (2, 3, 3) and (gray == 77).all()
    one_bit = pixels(load_image(encode(Image.new("1", (3, 2), 1), "PNG")))
    assert (one_bit == 255).all()


def test_palette_with_transparency():
    out = pixels(load_image(palette_with_transparency(12, 8)))
    assert tuple(out[4, 2]) == (255, 255, 255)  # index 0 is transparent: white, not the palette's red
    assert tuple(out[4, 9]) == (0, 255, 0)


def test_sixteen_bit_png_keeps_its_full_range():
    assert Image.open(io.BytesIO(sixteen_bit_png())).mode == "I;16"
    out = pixels(load_image(sixteen_bit_png(48, 32)))
    assert out.shape == (32, 48, 3)
    assert tuple(out[0, 0]) == (0, 0, 0) and tuple(out[0, -1]) == (255, 255, 255)
    assert 110 <= out[0, 24, 0] <= 145  # the middle of the ramp is mid-grey, not saturated
    assert (np.diff(out[0, :, 0]) >= 0).all()


def test_cmyk_jpeg_becomes_the_right_colour():
    assert Image.open(io.BytesIO(cmyk_jpeg())).mode == "CMYK"
    out = pixels(load_image(cmyk_jpeg()))
    red, green, blue = out[10, 10]
    assert red < 60 and green > 200 and blue > 200  # cyan ink


def test_exif_rotated_jpeg_is_shown_upright():
    raw = Image.open(io.BytesIO(exif_rotated_jpeg(40, 20)))
    assert raw.size == (40, 20)
    out = pixels(load_image(exif_rotated_jpeg(40, 20)))
    assert out.shape == (40, 20, 3)  # portrait after rotation
    # orientation 6: rotated 90 degrees clockwise, so the stored left half (red) ends up on top
    top, bottom = out[5, 10], out[35, 10]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_animated_gif_gives_the_first_frame():
    image = Image.open(io.BytesIO(animated_gif()))
    assert image.is_animated and image.n_frames == 2
    out = pixels(load_image(animated_gif()))
    assert tuple(out[8, 8]) == (255, 0, 0)


def test_arrays_of_other_types():
    floats = np.zeros((4, 5, 3), np.float32)
    floats[0, 0] = 1.0
    out = pixels(load_image(floats))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[1, 1]) == (0, 0, 0)
    assert pixels(load_image(np.full((2, 3, 1), 9, np.uint8))).shape == (2, 3, 3)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((2, 3, 5), np.uint8))


@pytest.mark.parametrize("data", [png_bomb(50_000, 50_000), jpeg_bomb(60_000, 60_000)], ids=["png", "jpeg"])
def test_a_decompression_bomb_is_refused_before_decoding(data):
    assert len(data) < 2_000
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ImageError, match="too large"):
        load_image(data)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 1.0 and peak < 20_000_000  # decoding would take gigabytes


def test_the_pixel_limit_is_tscams_own_and_checked_from_the_header():
    with pytest.raises(ImageError, match="over the limit"):
        load_image(png_bomb(8_000, 6_000))  # under Pillow's bomb limit, over tscam's
    assert 8_000 * 6_000 > MAX_PIXELS
    with pytest.raises(ImageError, match="over the limit"):
        load_image(encode(noise(20, 20), "PNG"), max_pixels=399)
    assert load_image(encode(noise(20, 20), "PNG"), max_pixels=400).size == (20, 20)


def test_a_file_that_is_not_an_image(tmp_path: Path):
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: eggs, milk\n")
    with pytest.raises(ImageError, match=r"notes\.jpg is not an image"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files(fmt):
    data = encode(noise(64, 48), fmt)
    for cut in (len(data) // 2, 40):
        with pytest.raises(ImageError, match="truncated|could not be read|not an image"):
            load_image(data[:cut])


def test_zero_bytes(tmp_path: Path):
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png"):
        load_image(empty)


def test_missing_path(tmp_path: Path):
    with pytest.raises(ImageError, match="no image file at .*missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="no image file"):
        load_image(tmp_path)  # a directory is not an image file either


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path):
    path = tmp_path / "huge.png"
    with open(path, "wb") as handle:  # sparse: 1 GiB long, no disk space used
        handle.write(png_bomb(100, 100))
        handle.truncate(2**30)
    tracemalloc.start()
    with pytest.raises(ImageError, match="huge.png is 1,073,741,824 bytes, over the file size limit"):
        load_image(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 10_000_000


def test_read_file_judges_kind_and_size_before_opening(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it to read would block
    for path in (fifo, tmp_path, tmp_path / "missing.png"):
        with pytest.raises(ImageError, match=f"^no image file at {re.escape(str(path))}$"):
            read_file(path)
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as file:
        file.truncate(2**40)  # a terabyte that takes no disk
    with pytest.raises(ImageError, match="1,099,511,627,776 bytes, over the file size limit of 1,000"):
        read_file(sparse, max_bytes=1000)
    (tmp_path / "small.bin").write_bytes(b"x" * 1000)
    assert read_file(tmp_path / "small.bin", max_bytes=1000) == b"x" * 1000


@pytest.mark.parametrize("kind", ["gray16_png", "rgba_png", "palette_transparent_png", "float_tiff", "rgb_jpeg"])
def test_converting_a_large_image_stays_within_the_stated_memory_bound(tmp_path: Path, kind: str):
    """Pillow's buffers are invisible to tracemalloc: the peak is measured in a child process.
    Before the bound, the 16-bit PNG took 3x it (a float64 copy of every pixel), RGBA and
    palette files 2x (two extra full-size copies while flattening)."""
    side = 4000
    path, peak = load_peak(KINDS[kind], tmp_path, side)
    bound = KINDS[kind].bound(side * side)
    assert 0 < peak <= bound, f"{kind}: {peak / 2**20:.0f} MiB at its peak, over the bound of {bound / 2**20:.0f} MiB"
    assert load_image(path).size == (side, side)


def test_rgba_la_and_premultiplied_modes_flatten_alike():
    half_black = [Image.new(mode, (3, 2), value) for mode, value in (("RGBA", (0, 0, 0, 128)), ("LA", (0, 128)))]
    premultiplied = [image.convert({"RGBA": "RGBa", "LA": "La"}[image.mode]) for image in half_black]
    for image in half_black + premultiplied:
        assert conversion(image) == "flatten"
        out = pixels(load_image(image))
        assert (abs(out - 127) <= 1).all(), image.mode


@pytest.mark.parametrize("value", [99, 0, 1, "6"], ids=["99", "0", "1", "ascii"])
def test_an_orientation_that_is_not_a_rotation_is_neither_applied_nor_reported(value):
    data = ascii_orientation_jpeg(40, 20) if value == "6" else exif_rotated_jpeg(40, 20, orientation=value)
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == value
    assert orientation(Image.open(io.BytesIO(data))) is None
    assert load_image(data).size == (40, 20)
    assert orientation(Image.open(io.BytesIO(exif_rotated_jpeg(40, 20, orientation=8)))) == 8


def test_damaged_pixel_data_is_an_image_error_inside_load_image():
    """JPEG decodes lazily: the error must come from load_image, not from whoever touches the pixels."""
    jpeg = encode(noise(640, 480), "JPEG")
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(jpeg[: len(jpeg) // 2])
