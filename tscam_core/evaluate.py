"""Evaluate a checkpoint on a WSOL dataset: one forward pass per batch, every metric from the cached maps.

    python -m tscam_core.evaluate --checkpoint checkpoints/tscam_fashion.safetensors \\
        --dataset data/fashion-cluttered --split test --out results/fashion

Frame: boxes and masks are scored in the model-input frame, as the paper does (test images resized
to 224 x 224 with their GT boxes scaled along, ``Preprocess.geometry``); each map is upsampled to the
input size by ``boxes.upsample_map``. The per-image table reports boxes in the original image
(``Preprocess.boxes_to_original``). With a center crop in the checkpoint's preprocessing, GT boxes
are clipped to the crop, as they would be in the official code.

Protocol: every default is the reference code's (``tscam_core.metrics`` names each convention and its
source file): IoU counts box pixels inclusively; Top-1/Top-5 Loc need IoU > 0.5 and GT-known Loc
IoU >= 0.5 (TS-CAM ``lib/cams_deit.py``); Algorithm 1 judges Part and More on the GT box of highest IoU;
MaxBoxAccV2 and PxAP sweep ``np.arange(0, 1, 0.001)`` (wsolevaluation ``evaluation.py``).
``--box-convention half_open`` and ``--cam-curve-interval 0.01`` are options, recorded in
summary.json's settings.

One pass yields the main setting (``variant`` / ``layers``: the paper's five accuracies, Algorithm 1,
MaxBoxAccV2, PxAP where masks exist, the curves against the IoU and CAM thresholds), the three map
variants and every layer count 1..L, all from the same ``Explanation``. The model runs in the main
thread, as one traced graph that needs no interpreter lock while it runs (``graph.graph_explain``),
while a pool (``ScoringPool.of``: a few threads on a small machine, forked processes from
``PROCESS_POOL_CORES`` cores on, where threads stop scaling on the GIL; at a lower priority, so
that the model is not kept waiting on few cores) scores slices of the batches before: all maps
of a slice are upsampled and quantised together, the MaxBoxAccV2 sweep of each GT-class map is one
union-find pass over its pixels (``boxes.contour_sweeps``), and the other maps' boxes come from one
stacked contour pass (``boxes.largest_boxes``), equal to the one-map-at-a-time protocol number for
number. A thread decodes images ahead of the model (data-loader processes where cores are to spare,
``loader_workers``); accumulators keep only counts and histograms, never maps. Besides the
sweep, the per-image cost is mostly the thumbnail of every failure, the PxAP histograms against a
mask read from disk, and decoding.

For benchmarks and notebooks: ``evaluate(model, dataset, out, EvalSettings(...)) -> Results``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import multiprocessing
import os
import platform
import random
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .boxes import contour_sweeps, largest_boxes, upsample_grays
from .cnn_cam import CNNCAM
from .datasets import Sample, TorchWSOL, WSOLDataset, collate, load_mask, object_pixels, open_dataset
from .datasets.common import Skip
from .errors import DatasetError, TSCAMError
from .explanation import CAM_VARIANTS, VARIANTS, Blocks, Explanation, MapSpec, variants_for
from .graph import graph_explain
from .images import load_image
from .loading import load_model
from .metrics import (
    BOX_CONVENTIONS,
    CAM_CURVE_INTERVAL,
    DEFAULT_BOX_CONVENTION,
    BoxConvention,
    LocalizationAccumulator,
    MaxBoxAccV2,
    Overlap,
    PxAP,
    Tally,
    ThresholdCurve,
    cam_thresholds,
    grouped_max_ious,
    hits,
    score_histograms,
    sweeps_best_ious,
)
from .model import TSCAM
from .overlay import GT_COLOR, PRED_COLOR, DrawnBox, blend
from .results import (
    PARTIAL_THUMBNAIL_DIR,
    SUMMARY_FILE,
    THUMBNAIL_DIR,
    Results,
    ResultsError,
    thumbnail_name,
    write_results,
)
from .transforms import Preprocess, resize

#: How many batches may wait for the thread pool before the model pauses (bounds memory).
MAX_PENDING_BATCHES = 2
#: How many batches the decoding thread may run ahead of the model.
PREFETCH_BATCHES = 2


def default_loader_workers() -> int:
    """Decoding processes: one per two cores beyond the two that the model and the scoring pool keep busy."""
    return max(0, min(4, (usable_cores() - 2) // 2))


@dataclass(frozen=True)
class EvalSettings:
    """What is measured and how; recorded in summary.json["settings"]."""

    cam_threshold: float = 0.1  # the paper's threshold for the box of the main setting
    map: MapSpec = MapSpec()  # the main map; the other variants use its blocks and sign convention
    iou_threshold: float = 0.5  # Top-1/Top-5 Loc need IoU above it, GT-known Loc at least it (official code)
    box_convention: BoxConvention = DEFAULT_BOX_CONVENTION  # pixels counted inclusively, as both references
    cam_curve_interval: float = CAM_CURVE_INTERVAL  # MaxBoxAccV2 sweep and PxAP bins (Choe et al.'s step, 0.001)
    threshold_curve_interval: float = 0.05  # accuracy vs CAM threshold (largest contour)
    batch_size: int = 32
    threads: int | None = None  # scoring workers (None: see ScoringPool.of)
    pool: Literal["auto", "thread", "process"] = "auto"  # auto: processes from PROCESS_POOL_CORES cores on
    loader_workers: int = field(default_factory=default_loader_workers)  # 0: a decoding thread
    model_threads: int | None = None  # torch's CPU threads during the run (None: as set); see evaluate()
    graph: bool = True  # the model as one traced graph, free of the GIL while the pool scores (tscam_core.graph)
    thumbnails: int = 16  # images sampled for success thumbnails (failures always get one)
    thumbnail_size: int = 128  # longest side at most; never larger than the model input
    limit: int | None = None
    seed: int = 0

    def record(self) -> dict:
        return {
            "cam_threshold": self.cam_threshold, **self.map.record(),
            "iou_threshold": self.iou_threshold, "box_convention": self.box_convention,
            "cam_curve_interval": self.cam_curve_interval,
            "threshold_curve_interval": self.threshold_curve_interval, "frame": "model_input",
            "batch_size": self.batch_size, "limit": self.limit, "threads": self.scoring.workers,
            "pool": self.scoring.kind, "graph": self.graph,
        }

    def __post_init__(self) -> None:
        # Out-of-range settings fail here, by name: none of them may quietly give a run of no images
        # (a batch size under 1), of all but the last images (a negative limit) or of empty boxes.
        problems = [f"{name} must be {rule}, got {value}" for name, value, ok, rule in (
            ("batch_size", self.batch_size, self.batch_size >= 1, "at least 1"),
            ("limit", self.limit, self.limit is None or self.limit >= 0, "0 or more"),
            ("cam_threshold", self.cam_threshold, 0.0 <= self.cam_threshold < 1.0, "within [0, 1)"),
            ("iou_threshold", self.iou_threshold, 0.0 < self.iou_threshold <= 1.0, "within (0, 1]"),
            ("box_convention", repr(self.box_convention), self.box_convention in BOX_CONVENTIONS,
             f"one of {', '.join(BOX_CONVENTIONS)}"),
            ("cam_curve_interval", self.cam_curve_interval, 0.0 < self.cam_curve_interval <= 1.0, "within (0, 1]"),
            ("threshold_curve_interval", self.threshold_curve_interval, 0.0 < self.threshold_curve_interval <= 1.0,
             "within (0, 1]"),
            ("thumbnails", self.thumbnails, self.thumbnails >= 0, "0 or more"),
        ) if not ok]
        if problems:
            raise ValueError("; ".join(problems))
        _ = self.scoring  # resolved once, now: an unknown pool kind fails here, before any work

    @cached_property
    def scoring(self) -> ScoringPool:
        return ScoringPool.of(self.pool, self.threads)


#: Usable cores from which ``pool="auto"`` scores in processes. Threads share the GIL, so they stop
#: scaling after a few; processes pay a fork each and a pickled batch. On a 16-core GPU machine a
#: fork pool scored deit_small faster than any thread pool (docs/scoring-pools.md); on 2 cores
#: threads do as well (docs/performance.md, section 5).
PROCESS_POOL_CORES = 8
#: Default size of a thread pool: past this, threads mostly wait for the GIL and one another.
THREAD_POOL_SIZE = 4


@dataclass(frozen=True)
class ScoringPool:
    """The kind and size of the scoring pool that ``EvalSettings.pool`` and ``threads`` resolve to."""

    kind: Literal["thread", "process"]
    workers: int

    @classmethod
    def of(cls, pool: str, threads: int | None) -> ScoringPool:
        cores = usable_cores()
        if pool == "auto":
            pool = "process" if cores >= PROCESS_POOL_CORES and _can_fork() else "thread"
        if pool not in ("thread", "process"):
            raise ValueError(f"pool must be 'auto', 'thread' or 'process', got {pool!r}")
        if threads is None:  # processes: a core each but the model's; threads: a few
            threads = max(1, cores - 1) if pool == "process" else min(THREAD_POOL_SIZE, cores)
        return cls(pool, max(1, threads))


def usable_cores() -> int:
    """The cores this process may run on (its affinity), where the OS says; else all of them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _can_fork() -> bool:
    """Linux only: forking is what makes processes cheap to start, and elsewhere it is not safe."""
    return sys.platform.startswith("linux")


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


@dataclass(frozen=True)
class Context:
    """What every scoring job shares (read-only)."""

    settings: EvalSettings
    preprocess: Preprocess
    sweep: np.ndarray
    curve: np.ndarray
    thumbnail_dir: Path
    dataset_root: Path
    variants: tuple[str, ...]  # every map variant of the model, in summary order
    depth: int
    num_classes: int
    main_layer_count: int | None = None  # k when the main map is TS-CAM over the first k blocks (reused)

    @cached_property
    def plan(self) -> SweepPlan:
        return SweepPlan.create(self.sweep, self.curve, self.settings.cam_threshold)

    @cached_property
    def extra_variants(self) -> tuple[str, ...]:
        """Variants with a map of their own; the main variant's is the GT-class main map."""
        return tuple(name for name in self.variants if name != self.settings.map.variant)

    @cached_property
    def extra_layers(self) -> tuple[int, ...]:
        """Layer counts with a map of their own (the main map serves ``main_layer_count``)."""
        return tuple(k for k in range(1, self.depth + 1) if k != self.main_layer_count)


@dataclass
class BatchJob:
    """A slice of one batch for the scoring pool: token-resolution maps and the ground truth.

    ``maps`` is B x M x h x w: channel 0 the GT class's main map, 1 the top-1 class's, then one
    per ``Context.extra_variants`` and one per ``Context.extra_layers``, all of the GT class.
    """

    samples: list[Sample]
    labels: list[int]
    top_classes: list[list[int]]
    top_scores: list[list[float]]
    maps: np.ndarray
    inputs: np.ndarray | None  # B x 3 x H x W model input for thumbnails; None: decoded again (a process pool)
    gt_boxes: list[np.ndarray]  # input frame
    sizes: list[tuple[int, int]]  # original (width, height)
    sampled: list[bool]


@dataclass
class ImageScore:
    """Everything the accumulators and the table need from one image."""

    sample: Sample
    image_path: str
    gt_class: int
    original_size: tuple[int, int]
    top_classes: list[int]
    top_scores: list[float]
    top1: Overlap
    gt_known_iou: float
    pred_box: np.ndarray
    gt_known_box: np.ndarray
    best_ious: np.ndarray
    curve_ious: np.ndarray
    histograms: tuple[np.ndarray, np.ndarray] | None
    variant_ious: dict[str, float]
    layer_ious: list[float]
    thumbnail: str | None = None


def score_batch(job: BatchJob, context: Context) -> list[ImageScore]:
    """All per-image map work of a batch slice: upsampling, boxes, sweeps, histograms, thumbnails (thread-safe).

    The maps are upsampled, normalised and quantised together; the boxes come from one
    ``contour_sweeps`` call (per image the GT-class map at every threshold of ``context.plan``: its
    MaxBoxAccV2 boxes, CAM-threshold curve and main box) and one ``largest_boxes`` call (every
    other map at the paper's threshold), and every IoU from two vectorised steps. Each number
    equals the one-map-at-a-time protocol (``box_from_map``).
    """
    settings, plan = context.settings, context.plan
    count, channels = job.maps.shape[:2]
    maps01, grays = upsample_grays(job.maps.reshape(count * channels, *job.maps.shape[2:]),
                                   context.preprocess.input_size)
    maps01, grays = (found.reshape(count, channels, *found.shape[1:]) for found in (maps01, grays))
    # The top-1 map needs its own box only where the top-1 class is not the GT class.
    own_top1 = [job.top_classes[i][0] != job.labels[i] for i in range(count)]
    others = [(i, c) for i in range(count) for c in range(1, channels) if c > 1 or own_top1[i]]
    sweeps = contour_sweeps(grays[:, 0], [plan.thresholds] * count, [(*plan.curve, plan.main)] * count)
    other_grays = grays[tuple(zip(*others, strict=True))] if others else grays[:0, 0]
    boxes = dict(zip(others, largest_boxes(other_grays, [settings.cam_threshold] * len(others)), strict=True))
    # Per image: the curve's boxes, the main box, one per other map (channels 2...), the top-1 box.
    chosen = np.stack([np.stack([
        *(sweeps[i].largest[j] for j in plan.curve), sweeps[i].largest[plan.main],
        *(boxes[i, c] for c in range(2, channels)), boxes.get((i, 1), sweeps[i].largest[plan.main]),
    ]) for i in range(count)])
    convention = settings.box_convention
    chosen_ious = grouped_max_ious(chosen.reshape(-1, 4), np.repeat(np.arange(count), chosen.shape[1]),
                                   job.gt_boxes, convention).reshape(count, -1)
    best = sweeps_best_ious(sweeps[:count], job.gt_boxes, len(context.sweep), convention)
    curve = len(plan.curve)
    scores, images = [], None
    for i in range(count):
        gts, pred_box, gt_known_box = job.gt_boxes[i], chosen[i, -1], chosen[i, curve]
        gt_known_iou, *extra = chosen_ious[i, curve:-1].tolist()
        extra_ious = iter(extra)
        score = ImageScore(
            sample=job.samples[i],
            image_path=_relative(job.samples[i].path, context.dataset_root),
            gt_class=job.labels[i],
            original_size=job.sizes[i],
            top_classes=job.top_classes[i],
            top_scores=job.top_scores[i],
            top1=Overlap.of(pred_box, gts, convention),
            gt_known_iou=gt_known_iou,
            pred_box=pred_box,
            gt_known_box=gt_known_box,
            best_ious=best[i],
            curve_ious=chosen_ious[i, :curve],
            histograms=_histograms(job.samples[i], job.sizes[i], maps01[i, 0], context),
            variant_ious={name: gt_known_iou if name == settings.map.variant else next(extra_ious)
                          for name in context.variants},
            layer_ious=[gt_known_iou if k == context.main_layer_count else next(extra_ious)
                        for k in range(1, context.depth + 1)],
        )
        located = hits(score.top_classes, score.gt_class, gt_known_iou, settings.iou_threshold).top1_loc
        if job.sampled[i] or not located:
            if job.inputs is None:  # a process pool: the file decoded again costs less than pickling every input
                pixels = np.asarray(context.preprocess.geometry(load_image(job.samples[i].path))[0])
            else:
                if images is None:  # back to pixels once per job, and only where a thumbnail is drawn
                    images = input_images(job.inputs, context.preprocess)
                pixels = images[i]
            score.thumbnail = _thumbnail(pixels, job.samples[i].image_id, gts, maps01[i, int(own_top1[i])],
                                         pred_box, context)
        scores.append(score)
    return scores


def _histograms(sample: Sample, size: tuple[int, int], cam01: np.ndarray,
                context: Context) -> tuple[np.ndarray, np.ndarray] | None:
    """PxAP histograms against the object mask moved into the input frame, where the dataset has masks."""
    if sample.mask_path is None:
        return None
    mask = load_mask(sample.mask_path)
    if mask.size != size:
        raise DatasetError(f"mask is {mask.size[0]}x{mask.size[1]} but its image is {size[0]}x{size[1]}",
                           str(sample.mask_path))
    moved, _ = context.preprocess.geometry(mask)
    return score_histograms(cam01, object_pixels(moved), context.sweep)


#: Thumbnail PNG encoding: Paeth filter, zlib level 1 with the run-length strategy. Same pixels as
#: any PNG; on map overlays about half the encoding time of Pillow's level 1, and smaller files.
PNG_OPTIONS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
               cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]


def _thumbnail(pixels: np.ndarray, image_id: str, gt_boxes: np.ndarray, cam01: np.ndarray, pred_box: np.ndarray,
               context: Context) -> str:
    """The top-1 class's map over the input image, GT boxes green and the predicted box red.

    Shrunk to ``thumbnail_size`` but never enlarged: an enlarged model input shows nothing more,
    and its encoding would cost several times as much (the dashboard scales pictures to fit).
    """
    height, width = pixels.shape[:2]
    scale = min(1.0, context.settings.thumbnail_size / max(height, width))
    boxes = np.concatenate([gt_boxes.reshape(-1, 4), pred_box.reshape(1, 4)])
    if scale < 1.0:
        target = (max(1, round(height * scale)), max(1, round(width * scale)))
        small, boxes = resize(Image.fromarray(pixels), boxes, target)
        pixels = np.asarray(small)
    drawn = [DrawnBox(box, GT_COLOR) for box in boxes[:-1]] + [DrawnBox(boxes[-1], PRED_COLOR)]
    rgb = blend(pixels, cam01, drawn)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]), PNG_OPTIONS)
    if not ok:
        raise OSError(f"could not encode the thumbnail of {image_id}")
    name = thumbnail_name(image_id)
    (context.thumbnail_dir / name).write_bytes(encoded.tobytes())
    return name


def make_jobs(explanation: Explanation, batch: dict, dataset: WSOLDataset, context: Context,
              sampled: set[int], parts: int) -> list[BatchJob]:
    """A batch's maps for the pool, in ``parts`` slices (so that the last batch's work spreads too).

    The maps are selected where the explanation lives (the GPU, if any); only the few chosen
    h x w maps per image travel to the CPU, in one tensor.
    """
    settings = context.settings
    labels = batch["label"].to(explanation.logits.device)
    scores, classes = explanation.top_classes(5)
    gt_only = labels[:, None]
    main = settings.map
    maps = torch.cat([
        explanation.maps(main, torch.stack([labels, classes[:, 0]], dim=1)),
        *(explanation.maps(dataclasses.replace(main, variant=name), gt_only) for name in context.extra_variants),
        *(explanation.maps(MapSpec("tscam", f"first:{k}", main.signed), gt_only) for k in context.extra_layers),
    ], dim=1).float().cpu().numpy()
    indices = batch["index"].tolist()
    labels_list, classes_list, scores_list = labels.tolist(), classes.cpu().tolist(), scores.cpu().tolist()
    sizes = [(int(w), int(h)) for w, h in batch["size"].tolist()]
    step = -(-len(indices) // max(1, parts))
    return [BatchJob(
        samples=[dataset[index] for index in indices[start:start + step]],
        labels=labels_list[start:start + step],
        top_classes=classes_list[start:start + step],
        top_scores=scores_list[start:start + step],
        maps=maps[start:start + step],
        inputs=batch["image"][start:start + step].numpy() if context.settings.scoring.kind == "thread" else None,
        gt_boxes=[boxes.numpy().reshape(-1, 4) for boxes in batch["boxes"][start:start + step]],
        sizes=sizes[start:start + step],
        sampled=[index in sampled for index in indices[start:start + step]],
    ) for start in range(0, len(indices), step)]


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def input_images(batch: torch.Tensor | np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """The model-input images back as B x H x W x 3 uint8, for thumbnails.

    In numpy, float32 step by step as torch would do it: a scoring thread must not queue
    small ops on torch's thread pool while the main thread runs the model on it.
    """
    pixels = np.asarray(batch, dtype=np.float32)
    mean = np.asarray(preprocess.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(preprocess.std, dtype=np.float32)[:, None, None]
    pixels = np.clip(np.round((pixels * std + mean) * np.float32(255)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


def score_job(job: BatchJob, context: Context) -> tuple[list[dict], Accumulators]:
    """A pool job: ``score_batch``, then the slice's table rows and its own running totals.

    The totals are counts, so the evaluation adds each slice's to its own (``Accumulators.merge``)
    and the model's thread does no per-image bookkeeping.
    """
    totals = Accumulators(context)
    return [totals.add(score) for score in score_batch(job, context)], totals


class Accumulators:
    """Every running total of one evaluation; ``add`` also returns the image's table row."""

    def __init__(self, context: Context) -> None:
        self.depth = context.depth
        self.settings = context.settings
        self.preprocess = context.preprocess
        self.localization = LocalizationAccumulator(context.num_classes, self.settings.iou_threshold)
        self.maxboxacc = MaxBoxAccV2(context.sweep)
        self.pxap = PxAP(bins=len(context.sweep))
        self.threshold_curve = ThresholdCurve(context.curve, self.settings.iou_threshold)
        self.tally = Tally()

    def add(self, score: ImageScore) -> dict:
        verdict, error = self.localization.add(score.gt_class, score.top_classes, score.top1, score.gt_known_iou)
        self.maxboxacc.add(score.best_ious)
        self.threshold_curve.add(score.curve_ious, verdict.top1_cls)
        if score.histograms is not None:
            self.pxap.add(*score.histograms)
        width, height = score.original_size
        row = {
            "image_id": score.sample.image_id, "image_path": score.image_path, "gt_class": score.gt_class,
            "gt_boxes": np.asarray(score.sample.boxes, np.float32).reshape(-1, 4).tolist(),
            "width": width, "height": height, "top5_classes": score.top_classes, "top5_scores": score.top_scores,
            "pred_box": self._original(score.pred_box, score), "gt_known_box": self._original(score.gt_known_box, score),
            "iou": score.top1.iou, "iog": score.top1.iog, "iop": score.top1.iop, "gt_known_iou": score.gt_known_iou,
            "error_type": error, "correct_cls": verdict.top1_cls, "top1_loc": verdict.top1_loc,
            "top5_loc": verdict.top5_loc, "gt_known": verdict.gt_known,
        }
        named = [(name, iou) for name, iou in score.variant_ious.items()]
        named += [(f"layers_{k}", iou) for k, iou in enumerate(score.layer_ious, 1)]
        for name, iou in named:
            other = hits(score.top_classes, score.gt_class, iou, self.settings.iou_threshold)
            row[f"gt_known_{name}"] = other.gt_known
            for criterion in CRITERIA:
                self.tally.add(f"{name}:{criterion}", getattr(other, criterion))
        row["thumbnail"] = score.thumbnail
        return row

    def merge(self, other: Accumulators) -> None:
        """Add the totals of other images (a pool job's) to these."""
        for name in ("localization", "maxboxacc", "pxap", "threshold_curve", "tally"):
            getattr(self, name).merge(getattr(other, name))

    def _original(self, box: np.ndarray, score: ImageScore) -> list[float]:
        return self.preprocess.boxes_to_original(box, score.original_size)[0].tolist()

    def metrics(self, class_names: list[str]) -> dict:
        metrics = self.localization.result()
        metrics["per_class"] = {"class_names": list(class_names), **metrics["per_class"]}
        metrics["maxboxacc_v2"] = self.maxboxacc.result()
        metrics["pxap"] = self.pxap.result()
        metrics["loc_vs_cam_threshold"] = self.threshold_curve.result()
        fraction = self.tally.fraction
        counts = list(range(1, self.depth + 1))
        metrics["layer_count"] = {"counts": counts, **{
            key: [fraction(f"layers_{k}:{criterion}") for k in counts] for key, criterion in CURVE_KEYS.items()}}
        metrics["variants"] = {name: {key: fraction(f"{name}:{criterion}") for key, criterion in VARIANT_KEYS.items()}
                               for name in variants_for(self.depth)}
        return metrics


#: Per-variant and per-layer-count criteria (``Hits`` fields) and their names in summary.json.
CRITERIA = ("top1_loc", "top5_loc", "gt_known")
CURVE_KEYS = {"top1": "top1_loc", "top5": "top5_loc", "gt_known": "gt_known"}
VARIANT_KEYS = {"top1_loc": "top1_loc", "top5_loc": "top5_loc", "gt_known_loc": "gt_known"}


def evaluate(model: TSCAM | CNNCAM, dataset: WSOLDataset, out: str | Path, settings: EvalSettings = EvalSettings(),
             name: str | None = None, progress: bool = True, dataset_kind: str = "auto",
             overwrite: bool = False) -> Results:
    """Score ``model`` on ``dataset`` and write the results folder ``out`` (see ``_evaluate``); a run
    that fails leaves no staged thumbnails behind."""
    try:
        return _evaluate(model, dataset, Path(out), settings, name, progress, dataset_kind, overwrite)
    except BaseException:
        shutil.rmtree(Path(out) / PARTIAL_THUMBNAIL_DIR, ignore_errors=True)
        raise


def _evaluate(model: TSCAM | CNNCAM, dataset: WSOLDataset, out: Path, settings: EvalSettings, name: str | None,
              progress: bool, dataset_kind: str, overwrite: bool) -> Results:
    """Score ``model`` on ``dataset`` and write the results folder ``out``; returns it loaded.

    A CNN CAM model (depth 0) is scored with ``MapSpec("cam")``, its only map: no other variants
    and no layer counts. ``settings.model_threads`` sets torch's thread count for the run and
    restores it after: with a small model on few cores, 1 leaves the other cores to the scoring
    (the model's arithmetic may round differently at another thread count).

    A folder that already holds finished results (a ``summary.json``) is refused unless
    ``overwrite``. Thumbnails are drawn into a staging folder and replace the old ones only once
    every image is scored, so a run that fails leaves an existing folder as it was, and a
    finished one leaves no thumbnail of an earlier run behind.

    An image that cannot be decoded stops the run with its one-line error, or, where the dataset
    was opened with ``on_error="skip"``, is left out and listed in summary.json with its reason.
    """
    if dataset.num_classes != model.num_classes:
        raise DatasetError(f"the dataset has {dataset.num_classes} classes but the checkpoint "
                           f"{model.info.source or model.info.arch} has {model.num_classes}", str(dataset.root))
    settings.map.check(model.depth)
    out = Path(out)
    if (out / SUMMARY_FILE).exists() and not overwrite:
        raise ResultsError("already holds evaluation results; pick another --out or pass --overwrite", out)
    subset = dataset if settings.limit is None else dataclasses.replace(dataset, samples=dataset.samples[:settings.limit])
    if len(subset) == 0:
        raise DatasetError(f"the {dataset.split} split has no images to evaluate", str(dataset.root))
    preprocess = model.info.transform
    chosen = settings.map.indices(model.depth)
    main_layer_count = len(chosen) if settings.map.variant == "tscam" and chosen == list(range(len(chosen))) else None
    context = Context(settings, preprocess, cam_thresholds(settings.cam_curve_interval),
                      cam_thresholds(settings.threshold_curve_interval), out / PARTIAL_THUMBNAIL_DIR, Path(dataset.root),
                      variants_for(model.depth), model.depth, model.num_classes, main_layer_count)
    shutil.rmtree(context.thumbnail_dir, ignore_errors=True)  # a failed run's leftovers
    context.thumbnail_dir.mkdir(parents=True)
    sampled = set(random.Random(settings.seed).sample(range(len(subset)), min(len(subset), settings.thumbnails)))
    device = next(model.parameters()).device
    totals = Accumulators(context)
    rows: list[dict] = []
    skipped: list[Skip] = list(dataset.skipped)
    bar = tqdm(total=len(subset), unit="img", desc="evaluating", disable=not progress)
    start = time.perf_counter()
    with torch_threads(settings.model_threads), make_pool(settings) as pool, ThreadPoolExecutor(1) as decoder, bar:
        pending: deque[list[Future]] = deque()

        def drain_one() -> None:
            for future in pending.popleft():
                scored, job_totals = future.result()
                rows.extend(scored)
                totals.merge(job_totals)
                bar.update(len(scored))

        for batch in decoded_batches(TorchWSOL(subset, preprocess, report_failures=True), settings, decoder):
            skipped += undecoded(batch, subset.on_error)
            bar.update(len(batch["failed"]))
            if "image" not in batch:
                continue
            images = batch["image"].to(device, non_blocking=True)
            explanation = (graph_explain(model, images, settings.batch_size) if settings.graph
                           else model.explain(images))
            jobs = make_jobs(explanation, batch, subset, context, sampled, parts=settings.scoring.workers)
            pending.append([pool.submit(score_job, job, context) for job in jobs])
            while len(pending) > MAX_PENDING_BATCHES:
                drain_one()
        while pending:
            drain_one()
    wall = time.perf_counter() - start
    if not rows:
        first = skipped[len(dataset.skipped)][2]
        raise DatasetError(f"no image of the {dataset.split} split could be decoded (first: {first})", str(dataset.root))
    summary = {
        "name": name or out.name,
        "checkpoint": checkpoint_identity(model),
        "dataset": {"path": str(dataset.root), "kind": _kind(dataset.root, dataset_kind), "split": dataset.split,
                    "num_images": len(rows), "skipped_annotations": len(dataset.skipped),
                    "skipped_images": len(skipped) - len(dataset.skipped), "skipped": skip_records(skipped, dataset.root)},
        "settings": settings.record(),
        "metrics": totals.metrics(model.info.class_names),
        "versions": versions(),
        "wall_time_s": wall,
        "images_per_second": len(rows) / wall if wall > 0 else None,
        "device": str(device),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _replace_thumbnails(out)
    return write_results(out, summary, rows)


def undecoded(batch: dict, on_error: str) -> list[Skip]:
    """The batch's images that could not be decoded, to skip; with ``on_error`` "raise" the first
    one's error instead, raised here in the main process as the same one line wherever it was decoded."""
    if batch["failed"] and on_error == "raise":
        raise DatasetError(batch["failed"][0][2])
    return batch["failed"]


def skip_records(skipped: Sequence[Skip], root: Path) -> list[dict]:
    """summary.json's list of what was left out: each file (relative to the dataset), line or null, reason."""
    return [{"file": _relative(Path(file), Path(root)), "line": line, "reason": reason} for file, line, reason in skipped]


def _replace_thumbnails(out: Path) -> None:
    """The staged thumbnails in place of the folder's old ones (an earlier run's, none of them kept)."""
    final, old = out / THUMBNAIL_DIR, out / f".{THUMBNAIL_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    (out / PARTIAL_THUMBNAIL_DIR).rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` (None: unchanged) inside, restored after."""
    saved = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def decoded_batches(items: TorchWSOL, settings: EvalSettings, decoder: Executor) -> Iterator[dict]:
    """The batches in order, decoded by ``settings.loader_workers`` processes, or with none by a thread.

    The thread (PIL and OpenCV release the GIL) keeps ``PREFETCH_BATCHES`` batches ahead of the
    model and costs nothing to start; worker processes pay a fork and a startup each run, worth it
    only with cores to spare for them.
    """
    if settings.loader_workers > 0:
        yield from torch.utils.data.DataLoader(items, batch_size=settings.batch_size, collate_fn=collate,
                                               num_workers=settings.loader_workers,
                                               pin_memory=torch.cuda.is_available())
        return
    ahead: deque[Future] = deque()
    for start in range(0, len(items), settings.batch_size):
        indices = range(start, min(start + settings.batch_size, len(items)))
        ahead.append(decoder.submit(lambda indices=indices: collate([items[i] for i in indices])))
        if len(ahead) > PREFETCH_BATCHES:
            yield ahead.popleft().result()
    while ahead:
        yield ahead.popleft().result()


def make_pool(settings: EvalSettings) -> Executor:
    """Threads (OpenCV releases the GIL) or processes, as ``settings.scoring`` resolves.

    Processes are forked on Linux, all at once before any other thread of ours starts (spawned
    elsewhere: each then imports torch, seconds per worker). A forked worker must not reconfigure
    OpenCV's thread pool (``cv2.setNumThreads`` hangs in a child of a process that used it).
    Either kind runs at a lower scheduling priority (Linux): on a CPU with few cores the
    scoring shares them with the model, and a model thread kept waiting slows the whole run,
    while a scoring thread kept waiting only lets its queue grow (bounded by MAX_PENDING_BATCHES).
    """
    scoring = settings.scoring
    if scoring.kind == "thread":
        return ThreadPoolExecutor(scoring.workers, initializer=yield_to_the_model)
    compile_kernels()  # once, here: forked workers inherit the machine code instead of each loading it
    method = "fork" if _can_fork() else "spawn"
    pool = ProcessPoolExecutor(scoring.workers, mp_context=multiprocessing.get_context(method),
                               initializer=yield_to_the_model)
    pool.submit(int).result()  # a fork pool starts every worker on its first task: now, while we are alone
    return pool


def compile_kernels() -> None:
    """Run each numba-compiled loop of the scoring once on a tiny input, so that it is compiled (or
    loaded from numba's cache) in this process."""
    _, grays = upsample_grays(np.eye(2, dtype=np.float32)[None], (3, 3))
    contour_sweeps(grays, [[0.0, 0.5]], [[1]])
    score_histograms(np.zeros(1), np.ones(1, bool))


#: Niceness added to the scoring workers (0..19): enough that the model's thread wins a contended core.
SCORING_NICENESS = 10


def yield_to_the_model() -> None:
    """Lower the calling thread's priority; elsewhere than Linux (per-thread niceness) do nothing."""
    if sys.platform.startswith("linux"):
        with suppress(OSError):  # e.g. a sandbox that forbids it: plain priority then
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                           min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + SCORING_NICENESS))


def checkpoint_identity(model: TSCAM) -> dict:
    info = model.info
    source = Path(info.source) if info.source else None
    return {
        "source": info.source, "sha256": file_sha256(source) if source and source.is_file() else None,
        "arch": info.arch, "num_classes": info.num_classes, "class_names": list(info.class_names),
        "head_kind": info.head_kind, "depth": model.depth, "preprocess": info.preprocess, "family": info.family,
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _kind(root: Path, kind: str) -> str:
    if kind != "auto":
        return kind
    from .datasets.cub import is_cub

    return "cub" if is_cub(Path(root)) else "ilsvrc"


def versions() -> dict:
    import timm

    from . import __version__

    return {"tscam": __version__, "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def parse_layers(text: str) -> Blocks:
    """--layers: "all", "first:k", "last:k", or 0-based block indices "0,3,5" ("3," for block 3 alone)."""
    if "," in text:
        try:
            return tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"--layers {text!r}: not a list of block indices") from error
    if text.strip().lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(
            f"--layers {text}: write first:{text} for the first {text} blocks, or {text}, for block {text} alone")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tscam_core.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, timm:NAME or hf://owner/repo/file")
    parser.add_argument("--dataset", required=True, help="dataset folder (CUB layout or ILSVRC)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--kind", default="auto", choices=("auto", "cub", "ilsvrc"))
    parser.add_argument("--out", required=True, help="results folder to write, e.g. results/<name>")
    parser.add_argument("--name", help="run name shown by the dashboard (default: the folder name)")
    parser.add_argument("--threshold", type=float, default=0.1, help="CAM threshold of the paper's boxes")
    parser.add_argument("--layers", type=parse_layers, default="all",
                        help="blocks averaged into A*: all (default), first:k, last:k, or block indices 0,3,5")
    parser.add_argument("--variant", choices=VARIANTS + CAM_VARIANTS,
                        help="map of the main setting (default: the model's own, tscam or a CNN's cam)")
    parser.add_argument("--signed-class-maps", action="store_true",
                        help="couple the signed S_c, as the paper's Eq. 7 and the official code do (default: rectified)")
    parser.add_argument("--iou-threshold", type=float, default=0.5,
                        help="Top-1/Top-5 Loc need IoU above it, GT-known Loc at least it (the official code's)")
    parser.add_argument("--box-convention", default=DEFAULT_BOX_CONVENTION, choices=BOX_CONVENTIONS,
                        help="how IoU counts box pixels: inclusive (+1 each side, both reference codes) or half_open")
    parser.add_argument("--cam-curve-interval", type=float, default=CAM_CURVE_INTERVAL,
                        help=f"MaxBoxAccV2 / PxAP threshold step (default {CAM_CURVE_INTERVAL}, Choe et al.'s "
                             "training and inference code; 0.01 is their evaluation.py's command-line default)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int,
                        help=f"workers for the per-image box work (default: {THREAD_POOL_SIZE} threads at most, "
                             "or a process per core but one)")
    parser.add_argument("--pool", default="auto", choices=("auto", "thread", "process"),
                        help=f"kind of those workers (auto: processes from {PROCESS_POOL_CORES} cores on, else threads)")
    parser.add_argument("--workers", type=int, default=default_loader_workers(),
                        help="data loader processes decoding images (0: a thread of this process)")
    parser.add_argument("--model-threads", type=int,
                        help="torch CPU threads for the model during the run (default: torch's); a small model on "
                             "few cores runs faster overall with 1, leaving the other cores to the box work")
    parser.add_argument("--eager", action="store_true",
                        help="run the model op by op instead of as one traced graph (same numbers, slower beside "
                             "the scoring threads)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--thumbnails", type=int, default=16, help="images sampled for success thumbnails")
    parser.add_argument("--on-error", default="raise", choices=("raise", "skip"),
                        help="bad annotation lines and images that cannot be decoded: stop, or skip and list them")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    args = parser.parse_args(argv)
    try:
        check_device(args.device)
        model = load_model(args.checkpoint, device=args.device, family=None)
        settings = EvalSettings(
            cam_threshold=args.threshold,
            map=MapSpec(args.variant or variants_for(model.depth)[0], args.layers, args.signed_class_maps),
            iou_threshold=args.iou_threshold, box_convention=args.box_convention,
            cam_curve_interval=args.cam_curve_interval, batch_size=args.batch_size, threads=args.threads,
            pool=args.pool, loader_workers=args.workers, model_threads=args.model_threads, graph=not args.eager,
            thumbnails=args.thumbnails, limit=args.limit,
        )
        dataset = open_dataset(args.dataset, args.split, args.kind, args.on_error)
        results = evaluate(model, dataset, args.out, settings, name=args.name, dataset_kind=args.kind,
                           overwrite=args.overwrite)
    except (TSCAMError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report(results))
    return 0


def check_device(name: str) -> None:
    """--device names a device torch knows and this machine has (a ValueError naming it otherwise)."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def report(results: Results) -> str:
    metrics = results.metrics
    box = metrics["maxboxacc_v2"]
    lines = [f"{results.path}: {results.summary['dataset']['num_images']} images, "
             f"{results.summary['images_per_second']:.1f} images/s"]
    for label, key in (("Top-1 Cls", "top1_cls"), ("Top-5 Cls", "top5_cls"), ("Top-1 Loc", "top1_loc"),
                       ("Top-5 Loc", "top5_loc"), ("GT-known Loc", "gt_known_loc")):
        lines.append(f"  {label:<14}{100 * metrics[key]:6.2f}")
    lines.append(f"  {'MaxBoxAccV2':<14}{100 * box['mean']:6.2f}  (IoU 30/50/70: "
                 f"{100 * box['iou_30']:.1f} / {100 * box['iou_50']:.1f} / {100 * box['iou_70']:.1f})")
    if metrics["pxap"] is not None:
        lines.append(f"  {'PxAP':<14}{100 * metrics['pxap']:6.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
