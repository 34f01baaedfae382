"""From a localization map to boxes, by the official TS-CAM / CAM protocol.

The map is upsampled to the image, min-max normalised, quantised to 0..255, kept where it
is above ``threshold x max``; the box is the bounding rectangle of the largest contour.
Boxes are ``[x0, y0, x1, y1]`` with half-open extents (see ``transforms``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

#: The box the official code returns when nothing survives the threshold.
EMPTY_BOX = np.array([0, 0, 1, 1], dtype=np.float32)


def as_numpy(cam: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(cam, torch.Tensor):
        cam = cam.detach().float().cpu().numpy()
    return np.asarray(cam, dtype=np.float32)


def normalize_map(cam: np.ndarray | Tensor) -> np.ndarray:
    """Min-max to [0, 1]; a constant map (no evidence anywhere) becomes all zeros."""
    cam = as_numpy(cam)
    low, high = float(cam.min()), float(cam.max())
    if not np.isfinite(low) or not np.isfinite(high) or high - low <= 1e-12:
        return np.zeros_like(cam, dtype=np.float32)
    return (cam - low) / (high - low)


def upsample_map(cam: np.ndarray | Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an h x w map to (height, width), then min-max normalised."""
    height, width = size
    resized = cv2.resize(as_numpy(cam), (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
    return normalize_map(resized)


def quantize(cam01: np.ndarray) -> np.ndarray:
    """The official 0..255 gray map that every CAM threshold cuts."""
    return (np.asarray(cam01).clip(0.0, 1.0) * 255).astype(np.uint8)


def threshold_mask(cam01: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 mask of the pixels the official protocol keeps: 255 * cam above int(threshold * max)."""
    gray = quantize(cam01)
    return cv2.threshold(gray, int(threshold * gray.max()), 255, cv2.THRESH_BINARY)[1]  # 255 where gray > cut


def _contours(mask: np.ndarray) -> Sequence[np.ndarray]:
    return cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]


def _rects(contours: Sequence[np.ndarray]) -> np.ndarray:
    """Each contour's bounding box, K x 4 float32, half-open."""
    boxes = np.array([cv2.boundingRect(c) for c in contours], dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def _largest_first(contours: Sequence[np.ndarray], boxes: np.ndarray) -> np.ndarray:
    """Order by contour area, ties to the larger box, then to the first found: the official box comes first."""
    areas = np.array([cv2.contourArea(c) for c in contours], dtype=np.float32)
    box_areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.lexsort((-box_areas, -areas))


def box_from_map(cam01: np.ndarray, threshold: float) -> np.ndarray:
    """The bounding box of the largest contour of a normalised, image-sized map."""
    boxes = boxes_from_map(cam01, threshold)
    return boxes[0] if len(boxes) else EMPTY_BOX.copy()


def boxes_from_map(cam01: np.ndarray, threshold: float, min_area: float = 0.0) -> np.ndarray:
    """Every contour's box (K x 4), largest contour first, dropping boxes under ``min_area`` pixels.

    The first box is the official protocol's; ties in contour area go to the larger box,
    then to the first found, so the order is deterministic.
    """
    contours = _contours(threshold_mask(cam01, threshold))
    boxes = _rects(contours)
    boxes = boxes[_largest_first(contours, boxes)]
    return boxes[(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) >= min_area]


@dataclass(frozen=True)
class ContourSweep:
    """Every contour's box at every CAM threshold of a sweep, and the official box where asked.

    ``owner[i]`` is the index of the threshold that ``boxes[i]`` came from; ``largest[j]`` is
    ``box_from_map(cam01, thresholds[j])`` for each asked ``j``.
    """

    boxes: np.ndarray
    owner: np.ndarray
    largest: dict[int, np.ndarray]


def contour_sweep(cam01: np.ndarray, thresholds: Sequence[float], largest_at: Iterable[int] = ()) -> ContourSweep:
    """``boxes_from_map`` at many thresholds for little more than the price of the contour passes.

    The gray map is quantised once; per threshold, one OpenCV call makes the mask
    (``gray > cut``, as ``threshold_mask``) and one finds its contours, both outside the GIL.
    The boxes are exactly those of ``boxes_from_map(cam01, t)`` (as a set; ``largest`` in the
    official order).
    """
    gray = quantize(cam01)
    cuts = (np.asarray(thresholds, dtype=np.float64) * float(gray.max())).astype(np.int64)
    found = [_contours(cv2.threshold(gray, cut, 1, cv2.THRESH_BINARY)[1]) for cut in cuts.tolist()]
    counts = np.fromiter((len(contours) for contours in found), np.int64, len(found))
    boxes = _rects([contour for contours in found for contour in contours])
    starts = np.concatenate([[0], np.cumsum(counts)])
    largest = {}
    for j in largest_at:
        mine = boxes[starts[j]:starts[j + 1]]
        largest[j] = mine[_largest_first(found[j], mine)[0]] if len(mine) else EMPTY_BOX.copy()
    return ContourSweep(boxes, np.repeat(np.arange(len(found)), counts), largest)


def predict_box(cam: np.ndarray | Tensor, size: tuple[int, int], threshold: float) -> np.ndarray:
    """Map (h x w, any scale) to one box in a (height, width) image: the full official protocol."""
    return box_from_map(upsample_map(cam, size), threshold)
