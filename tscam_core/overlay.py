"""One renderer for every picture of a map: the demo, the dashboard and the evaluation thumbnails."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

import cv2
import numpy as np
from PIL import Image
from torch import Tensor

from .boxes import upsample_map

COLORMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "hot": cv2.COLORMAP_HOT,
    "bone": cv2.COLORMAP_BONE,
}

GT_COLOR = (0, 200, 0)
PRED_COLOR = (230, 30, 30)


@dataclass(frozen=True)
class DrawnBox:
    box: Sequence[float]
    color: tuple[int, int, int] = PRED_COLOR
    label: str = ""
    label_at: Literal["top", "bottom"] = "top"  # the edge the label sits on: two boxes' labels stay apart


def colorize(cam: np.ndarray | Tensor, size: tuple[int, int], colormap: str = "jet") -> np.ndarray:
    """An H x W x 3 uint8 RGB heatmap of a map upsampled to (height, width)."""
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    gray = (upsample_map(cam, size) * 255).astype(np.uint8)
    return cv2.LUT(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), _rgb_table(colormap))


@cache
def _rgb_table(colormap: str) -> np.ndarray:
    """The colormap as a 256 x 1 x 3 RGB lookup table, built once: applyColorMap builds it on
    every call, which costs more than colouring a whole thumbnail."""
    levels = np.arange(256, dtype=np.uint8).reshape(256, 1)
    table = cv2.cvtColor(cv2.applyColorMap(levels, COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)
    table.flags.writeable = False
    return table


def overlay(
    image: Image.Image,
    cam: np.ndarray | Tensor | None,
    boxes: Iterable[DrawnBox] = (),
    colormap: str = "jet",
    alpha: float = 0.5,
) -> Image.Image:
    """The image with ``cam`` blended over it at opacity ``alpha`` and ``boxes`` drawn on top."""
    return Image.fromarray(blend(np.asarray(image.convert("RGB")), cam, boxes, colormap, alpha))


def blend(pixels: np.ndarray, cam: np.ndarray | Tensor | None, boxes: Iterable[DrawnBox] = (),
          colormap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """``overlay`` on an H x W x 3 uint8 RGB array (left as it is), for callers that hold arrays:
    the evaluation's thumbnails skip the round trips through PIL."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"opacity must be within 0..1, got {alpha}")
    if cam is None:
        canvas = np.array(pixels, dtype=np.uint8)
    else:  # one rounded blend in OpenCV: alpha 0 and 1 give either picture exactly
        canvas = cv2.addWeighted(pixels, 1.0 - alpha, colorize(cam, pixels.shape[:2], colormap), alpha, 0.0)
    thickness = max(1, round(min(canvas.shape[:2]) / 150))
    for drawn in boxes:
        x0, y0, x1, y1 = (int(round(v)) for v in drawn.box)
        cv2.rectangle(canvas, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), drawn.color, thickness)
        if drawn.label:
            draw_label(canvas, drawn.label, (x0, y0, x1, y1), drawn.color, drawn.label_at)
    return canvas


FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_label(canvas: np.ndarray, text: str, box: tuple[int, int, int, int], color: tuple[int, int, int],
               at: Literal["top", "bottom"] = "top") -> None:
    """``text`` on a filled tag of ``color`` at the box's top (or bottom) edge, outside the box where
    there is room, else inside it; always wholly inside the image, shrunk to fit its width."""
    height, width = canvas.shape[:2]
    scale = max(0.35, min(height, width) / 600)
    pad = max(1, round(scale * 4))
    (text_width, text_height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    while text_width + 2 * pad > width and scale > 0.2:
        scale *= 0.9
        (text_width, text_height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    tag_width, tag_height = text_width + 2 * pad, text_height + baseline + 2 * pad
    x0, y0, x1, y1 = box
    if at == "top":
        top = y0 - tag_height if y0 >= tag_height else y0
    else:
        top = y1 if y1 + tag_height <= height else y1 - tag_height
    top = min(max(top, 0), max(0, height - tag_height))
    left = min(max(x0, 0), max(0, width - tag_width))
    cv2.rectangle(canvas, (left, top), (left + tag_width - 1, top + tag_height - 1), color, cv2.FILLED)
    cv2.putText(canvas, text, (left + pad, top + pad + text_height), FONT, scale, text_color(color), 1, cv2.LINE_AA)


def text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on a light tag, white on a dark one (ITU-R BT.601 luma)."""
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)
