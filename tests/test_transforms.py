"""Boxes follow their image through resize, crop and flip; Preprocess maps boxes back."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from tscam_core import Preprocess
from tscam_core.transforms import center_crop, crop, hflip, random_crop, resize, to_tensor


def marked(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    """A black image with a white rectangle over the half-open ``box``."""
    array = np.zeros((height, width, 3), np.uint8)
    x0, y0, x1, y1 = box
    array[y0:y1, x0:x1] = 255
    return Image.fromarray(array)


def white_box(image: Image.Image) -> np.ndarray:
    """The half-open bounding box of the bright pixels, read back from the pixels."""
    bright = np.asarray(image.convert("L")) > 127
    rows, cols = np.nonzero(bright)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)


BOX = (20, 10, 60, 30)


def test_resize_scales_boxes_with_the_pixels():
    image, boxes = resize(marked(100, 50, BOX), np.array([BOX]), (25, 200))  # (height, width)
    assert image.size == (200, 25)
    np.testing.assert_allclose(boxes[0], [40, 5, 120, 15])
    np.testing.assert_allclose(white_box(image), boxes[0], atol=1)


def test_crop_shifts_and_clips_boxes():
    image, boxes = crop(marked(100, 50, BOX), np.array([BOX, (0, 0, 5, 5)]), top=5, left=30, size=(40, 50))
    assert image.size == (50, 40)
    np.testing.assert_allclose(boxes, [[0, 5, 30, 25], [0, 0, 0, 0]])  # the second box fell outside
    np.testing.assert_allclose(white_box(image), boxes[0])


def test_center_and_random_crops_follow_the_pixels():
    image, boxes = center_crop(marked(100, 50, BOX), np.array([BOX]), 40)
    np.testing.assert_allclose(white_box(image), boxes[0])
    rng = random.Random(0)
    for _ in range(5):
        image, boxes = random_crop(marked(100, 50, BOX), np.array([BOX]), (45, 70), rng)
        assert image.size == (70, 45)
        np.testing.assert_allclose(white_box(image), boxes[0])


def test_hflip_mirrors_boxes():
    image, boxes = hflip(marked(100, 50, BOX), np.array([BOX], np.float32))
    np.testing.assert_allclose(boxes[0], [40, 10, 80, 30])
    np.testing.assert_allclose(white_box(image), boxes[0])
    assert hflip(marked(4, 4, (0, 0, 1, 1)), np.zeros((0, 4)))[1].shape == (0, 4)


def test_to_tensor_normalises():
    tensor = to_tensor(Image.new("RGB", (3, 2), (255, 0, 128)), (0.5, 0.5, 0.5), (0.5, 0.25, 1.0))
    assert tensor.shape == (3, 2, 3)
    torch.testing.assert_close(tensor[:, 0, 0], torch.tensor([1.0, -2.0, 128 / 255 - 0.5]))


def test_to_tensor_gives_torchs_numbers_bit_for_bit():
    """Computed in numpy so that decoding threads stay off torch's pool: the same float32 steps as
    (x / 255 - mean) / std in torch, so a checkpoint sees exactly the inputs it was evaluated on."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        pixels = rng.integers(0, 256, (int(rng.integers(1, 40)), int(rng.integers(1, 40)), 3), dtype=np.uint8)
        mean, std = tuple(rng.random(3)), tuple(rng.random(3) + 0.01)
        in_torch = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)
        in_torch = (in_torch - torch.tensor(mean, dtype=torch.float32)[:, None, None]) / torch.tensor(
            std, dtype=torch.float32)[:, None, None]
        got = to_tensor(Image.fromarray(pixels), mean, std)
        assert got.dtype == torch.float32 and got.is_contiguous() and torch.equal(got, in_torch)


@pytest.mark.parametrize(("input_size", "resize_to"), [((32, 32), (32, 32)), ((32, 48), (40, 56)), ((224, 224), (256, 256))])
def test_preprocess_boxes_to_original_inverts_the_geometry(input_size, resize_to):
    preprocess = Preprocess(input_size=input_size, resize=resize_to)
    original = marked(300, 200, (90, 60, 210, 150))
    inside, boxes = preprocess.geometry(original, np.array([(90, 60, 210, 150)]))
    assert inside.size == (input_size[1], input_size[0])
    np.testing.assert_allclose(white_box(inside), boxes[0], atol=1)
    back = preprocess.boxes_to_original(boxes, original.size)  # original size as PIL's (width, height)
    np.testing.assert_allclose(back[0], [90, 60, 210, 150], atol=1e-3)
    # Without the image, boxes move as geometry moves them, bit for bit (cropped ones clipped too).
    many = np.array([(90, 60, 210, 150), (0, 0, 300, 200), (1.5, 2.25, 7.75, 199.5), (280, 10, 300, 20)])
    np.testing.assert_array_equal(preprocess.boxes_to_input(many, original.size), preprocess.geometry(original, many)[1])
    assert preprocess(original).shape == (3, *input_size)


def test_preprocess_round_trips_its_config():
    preprocess = Preprocess((32, 48), (40, 56), (0.1, 0.2, 0.3), (1.0, 2.0, 3.0))
    assert Preprocess.from_config(preprocess.to_config()) == preprocess
    assert Preprocess.from_config({"input_size": 64}) == Preprocess((64, 64), (64, 64))
