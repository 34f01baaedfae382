"""From a localization map to boxes, by the official TS-CAM / CAM protocol.

The map is upsampled to the image, min-max normalised, quantised to 0..255, kept where it
is above ``threshold x max``; the box is the bounding rectangle of the largest contour.
Boxes are ``[x0, y0, x1, y1]`` with half-open extents (see ``transforms``).
"""

from __future__ import annotations

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


def threshold_mask(cam01: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 mask of the pixels the official protocol keeps: 255 * cam above int(threshold * max)."""
    gray = (np.clip(cam01, 0.0, 1.0) * 255).astype(np.uint8)
    cut = int(threshold * gray.max())
    return np.where(gray > cut, 255, 0).astype(np.uint8)


def _contour_boxes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = np.array([_rect(c) for c in contours], dtype=np.float32).reshape(-1, 4)
    areas = np.array([cv2.contourArea(c) for c in contours], dtype=np.float32)
    return boxes, areas


def _rect(contour: np.ndarray) -> list[int]:
    x, y, w, h = cv2.boundingRect(contour)
    return [x, y, x + w, y + h]


def box_from_map(cam01: np.ndarray, threshold: float) -> np.ndarray:
    """The bounding box of the largest contour of a normalised, image-sized map."""
    boxes = boxes_from_map(cam01, threshold)
    return boxes[0] if len(boxes) else EMPTY_BOX.copy()


def boxes_from_map(cam01: np.ndarray, threshold: float, min_area: float = 0.0) -> np.ndarray:
    """Every contour's box (K x 4), largest contour first, dropping boxes under ``min_area`` pixels.

    The first box is the official protocol's; ties in contour area go to the larger box,
    then to the first found, so the order is deterministic.
    """
    boxes, areas = _contour_boxes(threshold_mask(cam01, threshold))
    box_areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = box_areas >= min_area
    order = np.lexsort((-box_areas[keep], -areas[keep]))
    return boxes[keep][order]


def predict_box(cam: np.ndarray | Tensor, size: tuple[int, int], threshold: float) -> np.ndarray:
    """Map (h x w, any scale) to one box in a (height, width) image: the full official protocol."""
    return box_from_map(upsample_map(cam, size), threshold)
