"""How boxes overlap: areas, intersections, IoU, IoG and IoP, and the IoUs of the boxes a map gives
over a sweep of CAM thresholds.

Everything here is numpy on boxes ``[x0, y0, x1, y1]``, pure and thread-safe: the per-image half
of the evaluation, whose numbers the accumulators of ``tscam_core.metrics`` add up.

- Pixel counting (``BoxConvention``): "inclusive", as both references (``cal_iou`` in TS-CAM's
  ``lib/cams_deit.py``, ``calculate_multiple_iou`` in wsolevaluation's ``evaluation.py``): a box spans
  ``x1 - x0 + 1`` columns and ``y1 - y0 + 1`` rows in every area, intersection and union. Boxes
  from maps are those of the official code, ``[x, y, x + w, y + h]`` from ``cv2.boundingRect`` (the
  mask's half-open bounding box), so the IoU counts each predicted box one column and one row wider
  than the pixels it bounds; GT boxes are counted the same way. "half_open" (area
  ``(x1 - x0) * (y1 - y0)``, the box as the pixels it bounds) is an option, never the default.
  The GT boxes themselves are the dataset's, scaled to the input as floats (``transforms``); the
  reference loaders truncate them to integers (TS-CAM's also clips ``x1``, ``y1`` to the last
  pixel): a difference in the data fed to the metrics, not in how boxes are counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .boxes import ContourSweep, contour_sweep

#: Algorithm 1's IoG above which a GT box counts as touched (M-Ins).
M_INS_IOG = 0.3

#: How box pixels are counted (see the module docstring); the default is both references'.
BoxConvention = Literal["inclusive", "half_open"]
BOX_CONVENTIONS: tuple[str, ...] = ("inclusive", "half_open")
DEFAULT_BOX_CONVENTION: BoxConvention = "inclusive"


def _extent(convention: BoxConvention) -> float:
    """What a box's width and height add to ``x1 - x0`` and ``y1 - y0``: a pixel where inclusive."""
    if convention not in BOX_CONVENTIONS:
        raise ValueError(f"box convention must be one of {', '.join(BOX_CONVENTIONS)}, got {convention!r}")
    return 1.0 if convention == "inclusive" else 0.0


def as_boxes(boxes: np.ndarray | Sequence) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def box_area(boxes: np.ndarray, convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> np.ndarray:
    boxes, extent = as_boxes(boxes), _extent(convention)
    return np.maximum(boxes[:, 2] - boxes[:, 0] + extent, 0) * np.maximum(boxes[:, 3] - boxes[:, 1] + extent, 0)


def pairwise_intersection(boxes: np.ndarray, gts: np.ndarray,
                          convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> np.ndarray:
    """Area shared by each of ``boxes`` (N, 4) with each of ``gts`` (K, 4): (N, K)."""
    return _intersection(as_boxes(boxes)[:, None, :], as_boxes(gts)[None, :, :], _extent(convention))


def _intersection(boxes: np.ndarray, gts: np.ndarray, extent: float) -> np.ndarray:
    """Area shared by broadcast ``boxes`` and ``gts`` (..., 4)."""
    width = np.minimum(boxes[..., 2], gts[..., 2]) - np.maximum(boxes[..., 0], gts[..., 0]) + extent
    height = np.minimum(boxes[..., 3], gts[..., 3]) - np.maximum(boxes[..., 1], gts[..., 1]) + extent
    return np.maximum(width, 0) * np.maximum(height, 0)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is not positive (an empty box overlaps nothing,
    as the reference's degenerate boxes)."""
    out = np.zeros(np.broadcast_shapes(numerator.shape, denominator.shape))
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def pairwise_iou(boxes: np.ndarray, gts: np.ndarray, convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> np.ndarray:
    """IoU of each of ``boxes`` (N, 4) with each GT box (K, 4): (N, K), in one vectorised step."""
    inter = pairwise_intersection(boxes, gts, convention)
    return _ratio(inter, box_area(boxes, convention)[:, None] + box_area(gts, convention)[None, :] - inter)


def grouped_max_ious(boxes: np.ndarray, groups: np.ndarray, gts: Sequence[np.ndarray],
                     convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> np.ndarray:
    """Each box's best IoU over the GT boxes of its own image, ``gts[groups[i]]``: (N,), many images in one step.

    The GT lists are padded to one length; the padding's IoUs are set to 0 (an inclusive
    ``[0, 0, 0, 0]`` is a pixel, not nothing), so each value equals
    ``box_iou(boxes[i], gts[groups[i]]).max()`` (0 with no GT box).
    """
    boxes, groups, extent = as_boxes(boxes), np.asarray(groups, dtype=np.int64), _extent(convention)
    width = max((len(as_boxes(g)) for g in gts), default=0)
    if width == 0 or len(boxes) == 0:
        return np.zeros(len(boxes))
    padded, real = np.zeros((len(gts), width, 4)), np.zeros((len(gts), width), bool)
    for row, used, g in zip(padded, real, gts, strict=True):
        g = as_boxes(g)
        row[:len(g)], used[:len(g)] = g, True
    mine = padded[groups]  # N x K x 4
    inter = _intersection(boxes[:, None, :], mine, extent)
    area = box_area(mine, convention).reshape(mine.shape[:2])
    ious = _ratio(inter, box_area(boxes, convention)[:, None] + area - inter)
    return np.where(real[groups], ious, 0.0).max(axis=1)


def box_iou(box: np.ndarray, gts: np.ndarray, convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> np.ndarray:
    """Intersection over union of ``box`` with each GT box: (K,)."""
    return pairwise_iou(as_boxes(box)[:1], gts, convention)[0]


def box_iog(box: np.ndarray, gts: np.ndarray, convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> np.ndarray:
    """Intersection over each GT box's area: (K,)."""
    return _box_overlaps(box, gts, convention)[1]


def box_iop(box: np.ndarray, gts: np.ndarray, convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> np.ndarray:
    """Intersection over the predicted box's area, per GT box: (K,)."""
    return _box_overlaps(box, gts, convention)[2]


def _box_overlaps(box: np.ndarray, gts: np.ndarray,
                  convention: BoxConvention) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU, IoG and IoP of ``box`` with each GT box, (K,) each, from one intersection."""
    box, gts = as_boxes(box)[:1], as_boxes(gts)
    inter = pairwise_intersection(box, gts, convention)[0]
    area, gt_areas = box_area(box, convention)[0], box_area(gts, convention)
    return _ratio(inter, area + gt_areas - inter), _ratio(inter, gt_areas), _ratio(inter, np.full_like(inter, area))


@dataclass(frozen=True)
class Overlap:
    """How one predicted box meets an image's GT boxes, as Algorithm 1 reads it.

    ``iou`` is the maximum over the GT boxes; ``iog`` and ``iop`` are those of the GT box with that
    IoU (the first of them), as TS-CAM's ``get_badcase_detail`` (``lib/cams_deit.py``) judges Part and More.
    """

    iou: float
    iog: float
    iop: float
    touched: int  # GT boxes with IoG > 0.3 (Algorithm 1's Count(IoG > 0.3))

    @classmethod
    def of(cls, box: np.ndarray, gts: np.ndarray, convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> Overlap:
        """From one intersection of ``box`` with every GT box."""
        iou, iog, iop = _box_overlaps(box, gts, convention)
        if iou.size == 0:
            return cls(0.0, 0.0, 0.0, 0)
        best = int(iou.argmax())  # the first of the highest, as the reference's strict ``>`` scan
        return cls(float(iou[best]), float(iog[best]), float(iop[best]), int((iog > M_INS_IOG).sum()))


def largest_box_ious(cam01: np.ndarray, gts: np.ndarray, thresholds: Sequence[float],
                     convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> np.ndarray:
    """Max IoU over GT boxes of the official (largest-contour) box at each CAM threshold: (T,)."""
    indices = range(len(thresholds))
    return sweep_largest_ious(contour_sweep(cam01, thresholds, largest_at=indices), gts, indices, convention)


def best_box_ious(cam01: np.ndarray, gts: np.ndarray, thresholds: Sequence[float],
                  convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> np.ndarray:
    """Best IoU of any box ``maxboxacc_boxes`` scores with any GT box at each CAM threshold (MaxBoxAccV2): (T,)."""
    return sweep_best_ious(contour_sweep(cam01, thresholds), gts, len(thresholds), convention)


#: The box Choe et al.'s code scores at a CAM threshold that keeps no pixel (``compute_bboxes_from_scoremaps``):
#: one pixel in the top-left corner where pixels are counted inclusively, nothing where half-open.
NO_PIXEL_BOX = np.zeros(4, np.float64)


def maxboxacc_boxes(boxes: np.ndarray, shape: tuple[int, int],
                    convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> np.ndarray:
    """The boxes Choe et al.'s code scores at one CAM threshold, from the contours' boxes there
    (``boxes.boxes_from_map``) in a map of ``shape`` (height, width): ``x1`` and ``y1`` clipped to the
    last column and row (``width - 1`` inclusive; half-open the clip to ``width`` changes nothing),
    and ``NO_PIXEL_BOX`` alone where there is no contour."""
    boxes = as_boxes(boxes).copy()
    if len(boxes) == 0:
        return NO_PIXEL_BOX[None].copy()
    height, width = shape
    extent = _extent(convention)
    boxes[:, 2:] = np.minimum(boxes[:, 2:], [width - extent, height - extent])
    return boxes


def sweep_largest_ious(sweep: ContourSweep, gts: np.ndarray, indices: Sequence[int],
                       convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> np.ndarray:
    """``largest_box_ious`` at the sweep's thresholds ``indices`` (asked for in its ``largest_at``)."""
    boxes = np.stack([sweep.largest[j] for j in indices]) if len(indices) else np.zeros((0, 4))
    return _row_max(pairwise_iou(boxes, gts, convention))


def sweep_best_ious(sweep: ContourSweep, gts: np.ndarray, count: int,
                    convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> np.ndarray:
    """``best_box_ious`` at the sweep's first ``count`` thresholds, from all its boxes in one IoU step."""
    return sweeps_best_ious([sweep], [gts], count, convention)[0]


def sweeps_best_ious(sweeps: Sequence[ContourSweep], gts: Sequence[np.ndarray], count: int,
                     convention: BoxConvention = DEFAULT_BOX_CONVENTION) -> np.ndarray:
    """``sweep_best_ious`` of many images (images x count), image i's sweep against ``gts[i]``, in one IoU step:
    every threshold's ``maxboxacc_boxes``, the clip and the box of a threshold without contour included."""
    groups = np.concatenate([np.full(len(sweep.owner), i) for i, sweep in enumerate(sweeps)] or [np.zeros(0, int)])
    owner = np.concatenate([sweep.owner for sweep in sweeps] or [np.zeros(0, int)])
    boxes = np.concatenate([sweep.boxes for sweep in sweeps] or [np.zeros((0, 4))]).astype(np.float64)
    keep = owner < count
    groups, owner, boxes = groups[keep], owner[keep], boxes[keep]
    extent = _extent(convention)
    corners = np.array([[sweep.shape[1], sweep.shape[0]] for sweep in sweeps], np.float64).reshape(-1, 2) - extent
    boxes[:, 2:] = np.minimum(boxes[:, 2:], corners[groups])
    found = np.zeros((len(sweeps), count), bool)
    found[groups, owner] = True
    empty_groups, empty_owner = np.nonzero(~found)
    groups, owner = np.concatenate([groups, empty_groups]), np.concatenate([owner, empty_owner])
    boxes = np.concatenate([boxes, np.repeat(NO_PIXEL_BOX[None], len(empty_groups), axis=0)])
    best = np.zeros((len(sweeps), count))
    np.maximum.at(best, (groups, owner), grouped_max_ious(boxes, groups, gts, convention))
    return best


def _row_max(matrix: np.ndarray) -> np.ndarray:
    return matrix.max(axis=1) if matrix.shape[1] else np.zeros(matrix.shape[0])
