"""The one renderer: size, opacity, boxes and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tscam_core import COLORMAPS, DrawnBox, overlay
from tscam_core.overlay import GT_COLOR, PRED_COLOR, blend, colorize
from tscam_core.testing.bad_files import noise


def test_output_has_the_image_size_whatever_the_map_size():
    image = noise(90, 60)
    out = overlay(image, torch.rand(4, 7), alpha=0.5)
    assert out.size == (90, 60) and out.mode == "RGB"


def test_opacity_zero_returns_the_image_unchanged():
    image = noise(40, 30)
    out = overlay(image, np.random.default_rng(0).random((4, 4)), alpha=0.0)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(image))


def test_opacity_one_is_the_heatmap_alone():
    image = noise(40, 30)
    cam = np.random.default_rng(1).random((4, 4))
    out = overlay(image, cam, colormap="viridis", alpha=1.0)
    np.testing.assert_array_equal(np.asarray(out), colorize(cam, (30, 40), "viridis"))
    assert not np.array_equal(np.asarray(out), np.asarray(image))


def test_boxes_are_drawn_in_their_colours_and_nothing_else_changes():
    image = Image.new("RGB", (100, 80), (128, 128, 128))
    boxes = [DrawnBox((10, 10, 40, 30), GT_COLOR), DrawnBox((50, 40, 90, 70), PRED_COLOR)]
    out = np.asarray(overlay(image, None, boxes, alpha=0.0))
    assert tuple(out[10, 20]) == GT_COLOR and tuple(out[29, 20]) == GT_COLOR  # top and bottom edges
    assert tuple(out[55, 50]) == PRED_COLOR and tuple(out[55, 89]) == PRED_COLOR  # left and right edges
    assert tuple(out[20, 25]) == (128, 128, 128)  # inside a box
    changed = np.any(out != 128, axis=2)
    colours = {tuple(pixel) for pixel in out[changed]}
    assert colours == {GT_COLOR, PRED_COLOR}


def test_any_image_mode_is_rendered_as_rgb():
    out = overlay(Image.new("RGBA", (20, 10), (10, 20, 30, 128)), torch.rand(2, 2), alpha=0.3)
    assert out.mode == "RGB" and out.size == (20, 10)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_bad_opacity_is_refused(alpha):
    with pytest.raises(ValueError, match="opacity"):
        overlay(noise(8, 8), torch.rand(2, 2), alpha=alpha)


def test_bad_colormap_is_refused():
    with pytest.raises(ValueError, match="unknown colormap"):
        overlay(noise(8, 8), torch.rand(2, 2), colormap="rainbow-unicorn")
    assert "jet" in COLORMAPS


def text_pixels(canvas: np.ndarray) -> int:
    """Pixels of the white lettering (the tags are red or green, the background black)."""
    return int((canvas.min(axis=2) > 200).sum())


@pytest.mark.parametrize("box", [(380, 0, 448, 30), (0, 260, 60, 300), (420, 280, 448, 300)])
def test_a_box_label_at_an_edge_is_drawn_whole_inside_the_image(box):
    label = "tabby, tabby cat 87% IoU 0.91"
    free = blend(np.zeros((300, 448, 3), np.uint8), None, [DrawnBox((150, 100, 250, 200), PRED_COLOR, label)])
    edge = blend(np.zeros((300, 448, 3), np.uint8), None, [DrawnBox(box, PRED_COLOR, label)])
    assert text_pixels(free) > 50
    assert text_pixels(edge) == text_pixels(free)  # every letter drawn, none cut off by the border


def test_a_label_sits_on_a_tag_of_its_box_colour_with_contrasting_text():
    canvas = blend(np.zeros((300, 448, 3), np.uint8), None, [DrawnBox((100, 100, 200, 200), GT_COLOR, "GT", "bottom")])
    below = canvas[201:230, 100:160]
    assert (np.abs(below.astype(int) - GT_COLOR).sum(axis=2) == 0).sum() > 100  # the filled tag, under the box
    assert text_pixels(below) > 10
    assert text_pixels(canvas[70:100]) == 0  # nothing above the box


def test_a_label_wider_than_the_image_is_shrunk_to_fit():
    label = "a very long class name, with synonyms 100%"
    small = blend(np.zeros((40, 60, 3), np.uint8), None, [DrawnBox((0, 0, 60, 40), PRED_COLOR, label)])
    assert text_pixels(small) > 0 and text_pixels(small[:, -1:]) == 0  # lettering ends inside the image
