"""Weakly supervised localization metrics: the paper's, its error analysis, and Choe et al.'s stricter ones.

Everything here is numpy (one loop compiled by numba) on boxes ``[x0, y0, x1, y1]``; maps are
normalised, image-sized arrays and become boxes only through ``tscam_core.boxes``.

Evaluation streams: a per-image function (pure, thread-safe: ``score_histograms`` here, ``Overlap.of``,
``largest_box_ious`` and ``best_box_ious`` in ``tscam_core.overlaps``) turns one map into a few numbers,
and an accumulator (``LocalizationAccumulator``, ``ThresholdCurve``, ``MaxBoxAccV2``, ``PxAP``, ``Tally``)
adds them up, so no map outlives its image.

Every default is a convention of the reference code, named with its source file:

- Pixel counting (``BoxConvention``): "inclusive", as both references; ``tscam_core.overlaps`` says
  how each box's pixels are counted and where the reference code does the same.
- The paper's protocol (TS-CAM ``lib/cams_deit.py``, ``evaluate_cls_loc`` and ``cls_loc_err``): a box
  from the map of each top-k class, the maximum IoU over all GT boxes; Top-1 and Top-5 Loc need
  the right class and IoU > 0.5, GT-known Loc needs IoU >= 0.5. Only the GT class's box can have
  the right class, so Top-1/Top-5 Loc need just the GT-known IoU and the rank of the GT class.
- Algorithm 1 of the appendix (``error_type``, TS-CAM ``get_badcase_detail``): Cls, M-Ins, Part,
  More, OT, mutually exclusive; Part (IoP > 0.5) and More (IoG >= 0.7) are judged on the GT box of
  highest IoU (the first of them on ties), M-Ins counts the GT boxes with IoG > 0.3.
- MaxBoxAccV2 (Choe et al., CVPR 2020; wsolevaluation ``evaluation.py``, ``BoxEvaluator`` and
  ``compute_bboxes_from_scoremaps``): for each CAM threshold of ``np.arange(0, 1, 0.001)`` every
  contour's box (holes' borders too), ``x1`` and ``y1`` clipped to the last column and row, and
  ``[0, 0, 0, 0]`` at a threshold that keeps no pixel; the best box per image; the accuracy at
  the best threshold for each IoU threshold 0.3/0.5/0.7 (IoU >= each); their mean.
- PxAP (wsolevaluation ``evaluation.py``, ``MaskEvaluator``): average precision of the pixels of a
  map against a mask, from score histograms binned at the same thresholds.

The threshold grid is the raw ``np.arange`` of the reference (``cam_thresholds``), step 0.001 as
Choe et al.'s training and inference code (``config.py``, ``inference.py``); their stand-alone
``evaluation.py`` command line defaults to 0.01, which ``--cam-curve-interval 0.01`` gives. The maps
themselves are the TS-CAM protocol's (bilinear upsampling to the input, as the paper evaluates);
Choe et al.'s code upsamples its CAMs bicubically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .compiled import compiled
from .overlaps import Overlap

#: Algorithm 1's error types, in the order they are tested; "correct" is Top-1 localization.
ERROR_TYPES: tuple[str, ...] = ("cls", "m_ins", "part", "more", "ot")
CORRECT = "correct"

#: Algorithm 1's constants: the Part and More cuts (M-Ins's is ``overlaps.M_INS_IOG``).
PART_IOP = 0.5
MORE_IOG = 0.7

#: The step of Choe et al.'s CAM-threshold sweep (np.arange(0, 1, 0.001) in their training and inference
#: code), and their IoU thresholds.
CAM_CURVE_INTERVAL = 0.001
MAXBOXACC_IOUS: tuple[float, ...] = (0.3, 0.5, 0.7)
#: IoU thresholds of the accuracy-vs-IoU curve (the paper's Fig. 7).
CURVE_IOUS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


def cam_thresholds(interval: float) -> np.ndarray:
    """``np.arange(0, 1, interval)``, unrounded, as Choe et al.'s code builds its sweep: a rounded
    value can move the gray cut ``int(t * max)`` and a PxAP bin edge."""
    if not 0.0 < interval <= 1.0:
        raise ValueError(f"CAM threshold interval must be within (0, 1], got {interval}")
    return np.arange(0, 1, interval)


def top1_located(iou: float | np.ndarray, iou_threshold: float = 0.5) -> bool | np.ndarray:
    """Top-1 / Top-5 Loc's test of a box: IoU strictly above the threshold (TS-CAM ``cls_loc_err``)."""
    return iou > iou_threshold


def gt_known_located(iou: float | np.ndarray, iou_threshold: float = 0.5) -> bool | np.ndarray:
    """GT-known Loc's test of a box: IoU at least the threshold (TS-CAM ``evaluate_cls_loc``)."""
    return iou >= iou_threshold


def error_type(correct_cls: bool, overlap: Overlap, iou_threshold: float = 0.5) -> str:
    """Algorithm 1: "correct" (Top-1 Loc) or the first error type that applies."""
    if not correct_cls:
        return "cls"
    if top1_located(overlap.iou, iou_threshold):
        return CORRECT
    if overlap.touched > 1:
        return "m_ins"
    if overlap.iop > PART_IOP:
        return "part"
    if overlap.iog >= MORE_IOG:
        return "more"
    return "ot"


@dataclass(frozen=True)
class Hits:
    """The paper's five accuracies for one image."""

    top1_cls: bool
    top5_cls: bool
    top1_loc: bool
    top5_loc: bool
    gt_known: bool


def hits(top_classes: Sequence[int], gt_class: int, gt_known_iou: float, iou_threshold: float = 0.5) -> Hits:
    """Classification and localization correctness from the ranked classes and the GT-class box's IoU.

    The official protocol draws a box for each top-k class and needs the right class *and*
    IoU > threshold: only the GT class's box can qualify, hence the GT-known IoU suffices.
    GT-known Loc needs IoU >= threshold.
    """
    ranked = [int(c) for c in top_classes]
    located = bool(top1_located(gt_known_iou, iou_threshold))
    top1 = bool(ranked) and ranked[0] == gt_class
    top5 = gt_class in ranked[:5]
    return Hits(top1, top5, top1 and located, top5 and located, bool(gt_known_located(gt_known_iou, iou_threshold)))


class Counts:
    """An accumulator whose state is counts (named in ``COUNTS``): two of them, fed disjoint images,
    add up to the one that saw both, so scoring workers can each keep their own (``merge``)."""

    COUNTS: tuple[str, ...] = ()

    def merge(self, other: Counts) -> None:
        settings = [name for name in vars(self) if name not in self.COUNTS]
        if type(other) is not type(self) or not all(
                np.array_equal(getattr(self, name), getattr(other, name)) for name in settings):
            raise ValueError(f"cannot merge {type(other).__name__} into {type(self).__name__} with other settings")
        for name in self.COUNTS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, dict):
                for key, value in theirs.items():
                    mine[key] = mine.get(key, 0) + value
            else:
                setattr(self, name, mine + theirs)


class Tally(Counts):
    """Named yes/no counts (e.g. one per variant or layer count): fractions of the images seen."""

    COUNTS = ("correct", "total")

    def __init__(self) -> None:
        self.correct: dict[str, int] = {}
        self.total: dict[str, int] = {}

    def add(self, name: str, value: bool) -> None:
        self.correct[name] = self.correct.get(name, 0) + bool(value)
        self.total[name] = self.total.get(name, 0) + 1

    def fraction(self, name: str) -> float | None:
        total = self.total.get(name, 0)
        return self.correct[name] / total if total else None


class LocalizationAccumulator(Counts):
    """The paper's accuracies, Algorithm 1's error fractions, per-class figures and Fig. 7's curve
    (its GT-known points at IoU >= each threshold, its Top-1 points at IoU > each, as the accuracies)."""

    COUNTS = ("count", "sums", "errors", "curve_gt_known", "curve_top1", "class_count", "class_gt_known",
              "class_top1_cls")

    def __init__(self, num_classes: int, iou_threshold: float = 0.5, curve_ious: Sequence[float] = CURVE_IOUS) -> None:
        self.iou_threshold = iou_threshold
        self.curve_ious = np.asarray(curve_ious, dtype=np.float64)
        self.count = 0
        self.sums = dict.fromkeys(Hits.__dataclass_fields__, 0)
        self.errors = dict.fromkeys((CORRECT, *ERROR_TYPES), 0)
        self.curve_gt_known = np.zeros(len(self.curve_ious), np.int64)
        self.curve_top1 = np.zeros(len(self.curve_ious), np.int64)
        self.class_count = np.zeros(num_classes, np.int64)
        self.class_gt_known = np.zeros(num_classes, np.int64)
        self.class_top1_cls = np.zeros(num_classes, np.int64)

    def add(self, gt_class: int, top_classes: Sequence[int], top1: Overlap, gt_known_iou: float) -> tuple[Hits, str]:
        """Count one image; ``top1`` is the overlap of the top-1 class's box. Returns its verdict."""
        verdict = hits(top_classes, gt_class, gt_known_iou, self.iou_threshold)
        error = error_type(verdict.top1_cls, top1, self.iou_threshold)
        self.count += 1
        for name in self.sums:
            self.sums[name] += getattr(verdict, name)
        self.errors[error] += 1
        self.curve_gt_known += gt_known_located(gt_known_iou, self.curve_ious)
        self.curve_top1 += top1_located(gt_known_iou, self.curve_ious) & verdict.top1_cls
        self.class_count[gt_class] += 1
        self.class_gt_known[gt_class] += verdict.gt_known
        self.class_top1_cls[gt_class] += verdict.top1_cls
        return verdict, error

    def result(self) -> dict:
        n = max(self.count, 1)
        per_class_n = np.maximum(self.class_count, 1)
        return {
            "top1_cls": self.sums["top1_cls"] / n,
            "top5_cls": self.sums["top5_cls"] / n,
            "top1_loc": self.sums["top1_loc"] / n,
            "top5_loc": self.sums["top5_loc"] / n,
            "gt_known_loc": self.sums["gt_known"] / n,
            "error_analysis": {name: self.errors[name] / n for name in ERROR_TYPES},
            "loc_vs_iou": {
                "iou_thresholds": self.curve_ious.tolist(),
                "gt_known": (self.curve_gt_known / n).tolist(),
                "top1": (self.curve_top1 / n).tolist(),
            },
            "per_class": {  # None for a class without images: nothing was measured
                "gt_known": _or_none(self.class_gt_known / per_class_n, self.class_count),
                "top1_cls": _or_none(self.class_top1_cls / per_class_n, self.class_count),
                "count": self.class_count.tolist(),
            },
        }


def _or_none(fractions: np.ndarray, counts: np.ndarray) -> list[float | None]:
    return [float(f) if n else None for f, n in zip(fractions, counts, strict=True)]


class ThresholdCurve(Counts):
    """GT-known (IoU >= threshold) and Top-1 (IoU > threshold) localization at each CAM threshold,
    from ``largest_box_ious``."""

    COUNTS = ("count", "gt_known", "top1")

    def __init__(self, thresholds: Sequence[float], iou_threshold: float = 0.5) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.iou_threshold = iou_threshold
        self.count = 0
        self.gt_known = np.zeros(len(self.thresholds), np.int64)
        self.top1 = np.zeros(len(self.thresholds), np.int64)

    def add(self, ious: np.ndarray, correct_cls: bool) -> None:
        ious = np.asarray(ious)
        self.count += 1
        self.gt_known += gt_known_located(ious, self.iou_threshold)
        self.top1 += top1_located(ious, self.iou_threshold) & bool(correct_cls)

    def result(self) -> dict:
        n = max(self.count, 1)
        return {"cam_thresholds": self.thresholds.tolist(), "gt_known": (self.gt_known / n).tolist(),
                "top1": (self.top1 / n).tolist()}


def best_threshold(thresholds: Sequence[float], gt_known: Sequence[float | None], preferred: float) -> float:
    """The CAM threshold of a ``ThresholdCurve`` with the best GT-known Loc; among equals the one nearest
    ``preferred`` (the threshold a run would use otherwise), so a flat curve keeps it."""
    scored = [(t, g) for t, g in zip(thresholds, gt_known, strict=True) if g is not None]
    if not scored:
        raise ValueError("the curve has no GT-known Loc at any CAM threshold (no image was scored)")
    return max(scored, key=lambda pair: (pair[1], -abs(pair[0] - preferred)))[0]


class MaxBoxAccV2(Counts):
    """Choe et al.'s MaxBoxAccV2 from per-threshold counts of images with a box at IoU >= delta."""

    COUNTS = ("count", "correct")

    def __init__(self, thresholds: Sequence[float], iou_thresholds: Sequence[float] = MAXBOXACC_IOUS) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.iou_thresholds = tuple(float(d) for d in iou_thresholds)
        self.count = 0
        self.correct = np.zeros((len(self.iou_thresholds), len(self.thresholds)), np.int64)

    def add(self, best_ious: np.ndarray) -> None:
        """One image's ``best_box_ious`` (T,)."""
        self.count += 1
        self.correct += np.asarray(best_ious)[None, :] >= np.asarray(self.iou_thresholds)[:, None]

    def result(self) -> dict:
        accuracy = self.correct / max(self.count, 1)
        best = accuracy.argmax(axis=1)  # ties: the lowest CAM threshold
        keys = [f"iou_{round(d * 100)}" for d in self.iou_thresholds]
        out: dict = {key: float(accuracy[i, best[i]]) for i, key in enumerate(keys)}
        out["mean"] = float(np.mean([out[key] for key in keys]))
        out["best_cam_threshold"] = {key: float(self.thresholds[best[i]]) for i, key in enumerate(keys)}
        return out


def score_histograms(cam01: np.ndarray, mask: np.ndarray, thresholds: Sequence[float] | None = None,
                     ignore: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Counts of object (mask) and background pixels per score bin, the bins cut at ``thresholds``
    (default: Choe et al.'s, ``cam_thresholds(CAM_CURVE_INTERVAL)``) and at 1: bin i holds scores in
    [thresholds[i], thresholds[i + 1]), the last bin exactly 1. Pixels in ``ignore`` count nowhere.

    The bins are those of the reference code's ``np.histogram`` over the same edges, compared in
    float64, so a float32 score just under a threshold stays in the bin below it.
    """
    if cam01.shape != mask.shape:
        raise ValueError(f"map {cam01.shape} and mask {mask.shape} differ in size")
    cuts = cam_thresholds(CAM_CURVE_INTERVAL) if thresholds is None else np.asarray(thresholds, np.float64)
    if len(cuts) == 0 or cuts[0] > 0:
        raise ValueError("score bins need thresholds that start at 0: a lower score would have no bin")
    keep = np.ones(mask.shape, bool) if ignore is None else ~np.asarray(ignore, bool)
    return _bin_counts(np.asarray(cam01, np.float64).ravel(), np.asarray(mask, bool).ravel(), keep.ravel(),
                       np.append(cuts, 1.0))


@compiled
def _bin_counts(scores: np.ndarray, mask: np.ndarray, keep: np.ndarray,
                edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.searchsorted(edges, clip(score, 0, 1), side="right") - 1`` for each kept pixel, counted
    apart for mask and background, in one pass instead of a binary search per pixel. The first
    guess is exact for evenly spread edges; the two loops make it exact for any."""
    last = len(edges) - 1
    positive, negative = np.zeros(len(edges), np.int64), np.zeros(len(edges), np.int64)
    for i in range(scores.size):
        if not keep[i]:
            continue
        score = min(max(scores[i], 0.0), 1.0)
        if score != score:
            index = last  # NaN sorts after every edge
        else:
            index = min(int(score * last), last)
            while index > 0 and score < edges[index]:
                index -= 1
            while index < last and score >= edges[index + 1]:
                index += 1
        if mask[i]:
            positive[index] += 1
        else:
            negative[index] += 1
    return positive, negative


class PxAP(Counts):
    """Pixel average precision over ``bins`` score thresholds (Choe et al.), from ``score_histograms`` only."""

    COUNTS = ("positive", "negative", "count")

    def __init__(self, bins: int = len(cam_thresholds(CAM_CURVE_INTERVAL))) -> None:
        self.bins = bins
        self.positive = np.zeros(bins + 1, np.int64)
        self.negative = np.zeros(bins + 1, np.int64)
        self.count = 0

    def add(self, positive: np.ndarray, negative: np.ndarray) -> None:
        self.positive += positive
        self.negative += negative
        self.count += 1

    def result(self) -> float | None:
        """AP in 0..1 (None with no object pixels): precision x recall gain, thresholds high to low."""
        total = self.positive.sum()
        if total == 0:
            return None
        tp = self.positive[::-1].cumsum()
        fp = self.negative[::-1].cumsum()
        precision = np.divide(tp, tp + fp, out=np.zeros(len(tp)), where=(tp + fp) > 0)
        recall_gain = np.diff(tp, prepend=0) / total
        return float((precision * recall_gain).sum())
