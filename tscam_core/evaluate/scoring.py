"""The per-image protocol: one image's maps and ground truth in, its record out, by one of two backends.

``score_image`` is the reference: the protocol written out map by map and threshold by threshold
with the one-map functions (``upsample_map``, ``box_from_map``, ``boxes_from_map``, ``box_iou``,
``score_histograms``), the clearest statement of what is measured and slow (a ``boxes_from_map``
per threshold of the MaxBoxAccV2 sweep). ``score_batch`` is the fast backend: all maps of a batch
upsampled and quantised together, the GT-class map's every threshold in one union-find sweep
(``boxes.contour_sweeps``), the other maps' boxes in one stacked contour pass (``boxes.largest_boxes``),
every IoU in two vectorised steps. The two give equal records, number for number (the tests compare
them). ``score_images`` runs the one ``BACKEND`` names, as timm's ``fused_attn`` switches attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np

from ..boxes import box_from_map, boxes_from_map, contour_sweeps, largest_boxes, upsample_grays, upsample_map
from ..metrics import Hits, error_type, hits, score_histograms
from ..overlaps import (
    DEFAULT_BOX_CONVENTION,
    BoxConvention,
    Overlap,
    box_iou,
    grouped_max_ious,
    maxboxacc_boxes,
    sweeps_best_ious,
)

Backend = Literal["batched", "reference"]
#: The backend ``score_images`` runs when none is passed: the batched one; "reference" for checking.
BACKEND: Backend = "batched"


@dataclass(frozen=True, eq=False)
class Protocol:
    """How images are scored: the thresholds, the IoU convention and the named maps beside the main one.

    Each image's maps come as channels: 0 the GT class's main map, 1 the top-1 class's main map
    (the same map where the top-1 class is the GT class), then one per name of ``names`` that is
    not in ``main_names`` (those the main map stands for).
    """

    input_size: tuple[int, int] | None = None  # (height, width) the maps are upsampled to, where the GT boxes
    # are; None: the input images' (``maps.score_loader`` sets it from each batch)
    cam_threshold: float = 0.1
    iou_threshold: float = 0.5
    box_convention: BoxConvention = DEFAULT_BOX_CONVENTION
    sweep: np.ndarray = field(default_factory=lambda: np.zeros(0))  # MaxBoxAccV2 thresholds and PxAP bins
    curve: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the accuracy-vs-CAM-threshold curve
    names: tuple[str, ...] = ()  # every named map, in record order
    main_names: tuple[str, ...] = ()  # the names the main map answers for (no channel of their own)

    @cached_property
    def channels(self) -> dict[str, int]:
        """The channel of each named map that has its own."""
        own = [name for name in self.names if name not in self.main_names]
        return {name: 2 + i for i, name in enumerate(own)}

    @cached_property
    def plan(self) -> SweepPlan:
        return SweepPlan.create(np.asarray(self.sweep, np.float64), np.asarray(self.curve, np.float64),
                                self.cam_threshold)


@dataclass(frozen=True)
class SweepPlan:
    """One contour sweep of the GT-class map serves MaxBoxAccV2, the CAM-threshold curve and the main box."""

    thresholds: np.ndarray  # the MaxBoxAccV2 sweep first, then what the other two need beyond it
    curve: tuple[int, ...]  # where the curve's thresholds sit in ``thresholds``
    main: int  # where ``cam_threshold`` sits

    @classmethod
    def create(cls, sweep: np.ndarray, curve: np.ndarray, cam_threshold: float) -> SweepPlan:
        position = {float(t): i for i, t in enumerate(sweep)}
        for t in (*curve.tolist(), float(cam_threshold)):
            position.setdefault(t, len(position))
        return cls(np.array(list(position), dtype=np.float64), tuple(position[float(t)] for t in curve),
                   position[float(cam_threshold)])


@dataclass(frozen=True, eq=False)
class ImageMaps:
    """One image's input to the scorer, all in the model-input frame."""

    maps: np.ndarray  # M x h x w token-resolution maps, channels as ``Protocol`` lays them out
    gt_class: int
    top_classes: list[int]  # ranked, best first
    gt_boxes: np.ndarray  # K x 4
    mask: np.ndarray | None = None  # object pixels (input size), for PxAP; None: no mask


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image's result: what the accumulators count and the per-image table shows."""

    gt_class: int
    top_classes: list[int]
    top1: Overlap  # the top-1 class's box against the GT boxes (Algorithm 1 reads it)
    gt_known_iou: float
    pred_box: np.ndarray  # the top-1 class's box
    gt_known_box: np.ndarray  # the GT class's box
    hits: Hits
    error: str  # Algorithm 1's verdict
    best_ious: np.ndarray  # MaxBoxAccV2: the best IoU at each sweep threshold
    curve_ious: np.ndarray  # the GT class's box's IoU at each curve threshold
    histograms: tuple[np.ndarray, np.ndarray] | None  # PxAP's object and background counts per bin
    named_ious: dict[str, float]  # GT-known IoU of each named map
    named_hits: dict[str, Hits]


def score_images(images: Sequence[ImageMaps], protocol: Protocol, backend: Backend | None = None) -> list[ImageRecord]:
    """Each image's record, by ``backend`` (default: ``BACKEND``)."""
    if protocol.input_size is None:
        raise ValueError("the protocol names no input size to upsample the maps to")
    chosen = backend or BACKEND
    if chosen == "batched":
        return score_batch(images, protocol)
    if chosen == "reference":
        return [score_image(image, protocol) for image in images]
    raise ValueError(f"scoring backend must be 'batched' or 'reference', got {chosen!r}")


def score_image(image: ImageMaps, protocol: Protocol) -> ImageRecord:
    """The reference scorer: one image, one map and one threshold at a time."""
    size, cut, convention = protocol.input_size, protocol.cam_threshold, protocol.box_convention
    gts = np.asarray(image.gt_boxes).reshape(-1, 4)

    def iou(box: np.ndarray) -> float:
        return float(box_iou(box, gts, convention).max(initial=0.0))

    maps01 = [upsample_map(cam, size) for cam in image.maps]
    gt01 = maps01[0]
    gt_known_box, pred_box = box_from_map(gt01, cut), box_from_map(maps01[1], cut)
    best = [max(iou(box) for box in maxboxacc_boxes(boxes_from_map(gt01, float(t)), gt01.shape, convention))
            for t in protocol.sweep]
    curve = [iou(box_from_map(gt01, float(t))) for t in protocol.curve]
    gt_known_iou = iou(gt_known_box)
    named = {name: gt_known_iou if name in protocol.main_names
             else iou(box_from_map(maps01[protocol.channels[name]], cut)) for name in protocol.names}
    histograms = None if image.mask is None else score_histograms(gt01, image.mask, protocol.sweep)
    return make_record(image.gt_class, image.top_classes, protocol.iou_threshold, Overlap.of(pred_box, gts, convention),
                       gt_known_iou, pred_box, gt_known_box, np.array(best, np.float64), np.array(curve, np.float64),
                       histograms, named)


def score_batch(images: Sequence[ImageMaps], protocol: Protocol) -> list[ImageRecord]:
    """The batched backend: the records of ``score_image``, from a few array passes over the whole batch.

    The top-1 map needs a box of its own only where the top-1 class is not the GT class.
    """
    if not images:
        return []
    plan, convention, count = protocol.plan, protocol.box_convention, len(images)
    stacked = np.stack([image.maps for image in images])
    channels = stacked.shape[1]
    maps01, grays = upsample_grays(stacked.reshape(count * channels, *stacked.shape[2:]), protocol.input_size)
    maps01, grays = (found.reshape(count, channels, *found.shape[1:]) for found in (maps01, grays))
    gt_boxes = [np.asarray(image.gt_boxes).reshape(-1, 4) for image in images]
    own_top1 = [image.top_classes[0] != image.gt_class for image in images]
    others = [(i, c) for i in range(count) for c in range(1, channels) if c > 1 or own_top1[i]]
    sweeps = contour_sweeps(grays[:, 0], [plan.thresholds] * count, [(*plan.curve, plan.main)] * count)
    other_grays = grays[tuple(zip(*others, strict=True))] if others else grays[:0, 0]
    boxes = dict(zip(others, largest_boxes(other_grays, [protocol.cam_threshold] * len(others)), strict=True))
    # Per image: the curve's boxes, the main box, one per other map (channels 2...), the top-1 box.
    chosen = np.stack([np.stack([
        *(sweeps[i].largest[j] for j in plan.curve), sweeps[i].largest[plan.main],
        *(boxes[i, c] for c in range(2, channels)), boxes.get((i, 1), sweeps[i].largest[plan.main]),
    ]) for i in range(count)])
    chosen_ious = grouped_max_ious(chosen.reshape(-1, 4), np.repeat(np.arange(count), chosen.shape[1]),
                                   gt_boxes, convention).reshape(count, -1)
    best = sweeps_best_ious(sweeps, gt_boxes, len(protocol.sweep), convention)
    curve = len(plan.curve)
    records = []
    for i, image in enumerate(images):
        gt_known_iou = float(chosen_ious[i, curve])
        named = {name: gt_known_iou if name in protocol.main_names
                 else float(chosen_ious[i, curve + protocol.channels[name] - 1]) for name in protocol.names}
        histograms = None if image.mask is None else score_histograms(maps01[i, 0], image.mask, protocol.sweep)
        records.append(make_record(image.gt_class, image.top_classes, protocol.iou_threshold,
                                   Overlap.of(chosen[i, -1], gt_boxes[i], convention), gt_known_iou, chosen[i, -1],
                                   chosen[i, curve], best[i], chosen_ious[i, :curve], histograms, named))
    return records


def make_record(gt_class: int, top_classes: Sequence[int], iou_threshold: float, top1: Overlap, gt_known_iou: float,
                pred_box: np.ndarray, gt_known_box: np.ndarray, best_ious: np.ndarray, curve_ious: np.ndarray,
                histograms: tuple[np.ndarray, np.ndarray] | None, named_ious: dict[str, float]) -> ImageRecord:
    """A record from its measured values, with the verdicts that follow from the IoUs and the ranked
    classes (``metrics.hits``, Algorithm 1); also how synthetic runs are made from made-up values."""
    classes = [int(c) for c in top_classes]
    verdict = hits(classes, gt_class, gt_known_iou, iou_threshold)
    return ImageRecord(
        gt_class=gt_class, top_classes=classes, top1=top1, gt_known_iou=gt_known_iou, pred_box=pred_box,
        gt_known_box=gt_known_box, hits=verdict, error=error_type(verdict.top1_cls, top1, iou_threshold),
        best_ious=best_ious, curve_ious=curve_ious, histograms=histograms, named_ious=named_ious,
        named_hits={name: hits(classes, gt_class, iou, iou_threshold) for name, iou in named_ious.items()})
