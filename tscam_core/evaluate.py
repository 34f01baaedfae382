"""Evaluate a checkpoint on a WSOL dataset: one forward pass per batch, every metric from the cached maps.

    python -m tscam_core.evaluate --checkpoint checkpoints/tscam_fashion.safetensors \\
        --dataset data/fashion-cluttered --split test --out results/fashion

Frame: boxes and masks are scored in the model-input frame, as the paper does (test images resized
to 224 x 224 with their GT boxes scaled along, ``Preprocess.geometry``); each map is upsampled to the
input size by ``boxes.upsample_map``. The per-image table reports boxes in the original image
(``Preprocess.boxes_to_original``). With a center crop in the checkpoint's preprocessing, GT boxes
are clipped to the crop, as they would be in the official code.

One pass yields the main setting (``variant`` / ``layers``: the paper's five accuracies, Algorithm 1,
MaxBoxAccV2, PxAP where masks exist, the curves against the IoU and CAM thresholds), the three map
variants and every layer count 1..L, all from the same ``Explanation``. The model runs in the main
thread while a pool (``threads`` workers; threads by default since OpenCV releases the GIL,
``pool="process"`` where Python overhead dominates) does the per-image work for the batches before,
and data-loader processes decode images; accumulators keep only counts and histograms, never maps.
The per-image cost is dominated by the MaxBoxAccV2 sweep (one contour pass per CAM threshold);
``cam_curve_interval=0.05`` makes it five times cheaper at a coarser threshold grid.

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
import re
import sys
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .boxes import box_from_map, contour_sweep, upsample_map
from .cnn_cam import CNNCAM
from .datasets import TorchWSOL, WSOLDataset, collate, open_dataset
from .errors import DatasetError, TSCAMError
from .explanation import (
    CAM_VARIANTS,
    VARIANTS,
    Explanation,
    LayerSelection,
    Variant,
    check_variant,
    select_layers,
    variants_for,
)
from .images import load_image
from .loading import load_model
from .metrics import (
    LocalizationAccumulator,
    MaxBoxAccV2,
    Overlap,
    PxAP,
    Tally,
    ThresholdCurve,
    box_iou,
    cam_thresholds,
    hits,
    score_histograms,
    sweep_best_ious,
    sweep_largest_ious,
)
from .model import TSCAM
from .overlay import GT_COLOR, PRED_COLOR, DrawnBox, overlay
from .results import THUMBNAIL_DIR, Results, thumbnail_name, write_results
from .transforms import Preprocess, resize

#: How many batches may wait for the thread pool before the model pauses (bounds memory).
MAX_PENDING_BATCHES = 2


@dataclass(frozen=True)
class EvalSettings:
    """What is measured and how; recorded in summary.json["settings"]."""

    cam_threshold: float = 0.1  # the paper's threshold for the box of the main setting
    layers: LayerSelection = None  # blocks averaged into A* for the main setting and the variants
    variant: Variant = "tscam"
    iou_threshold: float = 0.5
    cam_curve_interval: float = 0.01  # MaxBoxAccV2 sweep and PxAP bins (Choe et al.: 0.01)
    threshold_curve_interval: float = 0.05  # accuracy vs CAM threshold (largest contour)
    batch_size: int = 32
    threads: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))  # per-image box and metric work
    pool: Literal["thread", "process"] = "thread"  # processes sidestep the GIL on many-core machines
    loader_workers: int = field(default_factory=lambda: min(4, (os.cpu_count() or 2) // 2))  # image decoding
    thumbnails: int = 16  # images sampled for success thumbnails (failures always get one)
    thumbnail_size: int = 128
    limit: int | None = None
    seed: int = 0

    def record(self) -> dict:
        return {
            "cam_threshold": self.cam_threshold, "layers": _layers_record(self.layers), "variant": self.variant,
            "iou_threshold": self.iou_threshold, "cam_curve_interval": self.cam_curve_interval,
            "threshold_curve_interval": self.threshold_curve_interval, "frame": "model_input",
            "batch_size": self.batch_size, "limit": self.limit, "threads": self.threads, "pool": self.pool,
        }


def _layers_record(layers: LayerSelection) -> object:
    return list(layers) if isinstance(layers, (list, tuple)) else layers


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
    """What every per-image job shares (read-only)."""

    settings: EvalSettings
    preprocess: Preprocess
    sweep: np.ndarray
    curve: np.ndarray
    thumbnail_dir: Path
    main_layer_count: int | None = None  # k when the main map is TS-CAM over the first k blocks (reused)

    @cached_property
    def plan(self) -> SweepPlan:
        return SweepPlan.create(self.sweep, self.curve, self.settings.cam_threshold)


@dataclass
class ImageJob:
    """One image's share of a batch: its maps at token resolution and its ground truth in the input frame."""

    index: int
    image_id: str
    image_path: str
    mask_path: Path | None
    gt_class: int
    gt_boxes_input: np.ndarray
    gt_boxes_original: np.ndarray
    original_size: tuple[int, int]  # (width, height)
    top_classes: list[int]
    top_scores: list[float]
    gt_map: np.ndarray
    top1_map: np.ndarray
    variant_maps: dict[str, np.ndarray]
    layer_maps: list[np.ndarray]
    image: np.ndarray  # input-frame RGB uint8, for thumbnails
    sampled: bool


@dataclass
class ImageScore:
    """Everything the accumulators and the table need from one image."""

    job: ImageJob
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


def score_image(job: ImageJob, context: Context) -> ImageScore:
    """All per-image map work: upsampling, boxes, sweeps, histograms and the thumbnail (thread-safe).

    The GT-class map is quantised and contoured once per threshold of ``context.plan``; its
    MaxBoxAccV2 boxes, CAM-threshold curve and main box all come from that one sweep.
    """
    settings, plan = context.settings, context.plan
    size = context.preprocess.input_size
    gts = job.gt_boxes_input
    gt01 = upsample_map(job.gt_map, size)
    sweep = contour_sweep(gt01, plan.thresholds, largest_at=(*plan.curve, plan.main))
    gt_known_box = sweep.largest[plan.main]
    gt_known_iou = _max_iou(gt_known_box, gts)
    if job.top_classes[0] == job.gt_class:
        top1_01, pred_box = gt01, gt_known_box
    else:
        top1_01 = upsample_map(job.top1_map, size)
        pred_box = box_from_map(top1_01, settings.cam_threshold)
    score = ImageScore(
        job=job,
        top1=Overlap.of(pred_box, gts),
        gt_known_iou=gt_known_iou,
        pred_box=pred_box,
        gt_known_box=gt_known_box,
        best_ious=sweep_best_ious(sweep, gts, len(context.sweep)),
        curve_ious=sweep_largest_ious(sweep, gts, plan.curve),
        histograms=_histograms(job, gt01, context),
        variant_ious={name: gt_known_iou if name == settings.variant else _map_iou(cam, gts, size, settings)
                      for name, cam in job.variant_maps.items()},
        layer_ious=[gt_known_iou if k == context.main_layer_count else _map_iou(cam, gts, size, settings)
                    for k, cam in enumerate(job.layer_maps, 1)],
    )
    located = job.top_classes[0] == job.gt_class and score.top1.iou >= settings.iou_threshold
    if job.sampled or not located:
        score.thumbnail = _thumbnail(job, top1_01, pred_box, context)
    return score


def _max_iou(box: np.ndarray, gts: np.ndarray) -> float:
    ious = box_iou(box, gts)
    return float(ious.max()) if ious.size else 0.0


def _map_iou(cam: np.ndarray, gts: np.ndarray, size: tuple[int, int], settings: EvalSettings) -> float:
    return _max_iou(box_from_map(upsample_map(cam, size), settings.cam_threshold), gts)


def _histograms(job: ImageJob, cam01: np.ndarray, context: Context) -> tuple[np.ndarray, np.ndarray] | None:
    """PxAP histograms against the object mask moved into the input frame, where the dataset has masks."""
    if job.mask_path is None:
        return None
    mask = load_image(job.mask_path).convert("L")
    if mask.size != job.original_size:
        raise DatasetError(f"mask is {mask.size[0]}x{mask.size[1]} but its image is "
                           f"{job.original_size[0]}x{job.original_size[1]}", str(job.mask_path))
    moved, _ = context.preprocess.geometry(mask)
    bins = len(context.sweep)
    return score_histograms(cam01, np.asarray(moved) > 127, bins=bins)


def _thumbnail(job: ImageJob, cam01: np.ndarray, pred_box: np.ndarray, context: Context) -> str:
    """The top-1 class's map over the input image, GT boxes green and the predicted box red."""
    image = Image.fromarray(job.image)
    side = context.settings.thumbnail_size
    scale = side / max(image.size)
    target = (max(1, round(image.height * scale)), max(1, round(image.width * scale)))
    boxes = np.concatenate([job.gt_boxes_input.reshape(-1, 4), pred_box.reshape(1, 4)])
    small, boxes = resize(image, boxes, target)
    drawn = [DrawnBox(box, GT_COLOR) for box in boxes[:-1]] + [DrawnBox(boxes[-1], PRED_COLOR)]
    name = thumbnail_name(job.image_id)
    overlay(small, cam01, drawn).save(context.thumbnail_dir / name, optimize=False, compress_level=1)
    return name


def make_jobs(explanation: Explanation, batch: dict, dataset: WSOLDataset, images: np.ndarray,
              settings: EvalSettings, sampled: set[int]) -> list[ImageJob]:
    """Split a batch's explanation into per-image maps: every variant and layer count, GT and top-1 class.

    The maps are selected where the explanation lives (the GPU, if any); only the few chosen
    h x w maps per image travel to the CPU.
    """
    labels = batch["label"].to(explanation.logits.device)
    scores, classes = explanation.top_classes(5)
    pair = torch.stack([labels, classes[:, 0]], dim=1)
    main = _numpy(explanation.maps(settings.variant, settings.layers, pair))
    gt_only = labels[:, None]
    variants = {name: _numpy(explanation.maps(name, settings.layers, gt_only)[:, 0]) for name in explanation.variants}
    layers = [_numpy(explanation.maps("tscam", k, gt_only)[:, 0]) for k in range(1, explanation.depth + 1)]
    scores, classes, labels = scores.cpu(), classes.cpu(), labels.cpu()
    jobs = []
    for i, index in enumerate(batch["index"].tolist()):
        sample = dataset[index]
        jobs.append(ImageJob(
            index=index,
            image_id=sample.image_id,
            image_path=_relative(sample.path, dataset.root),
            mask_path=sample.mask_path,
            gt_class=int(labels[i]),
            gt_boxes_input=batch["boxes"][i].numpy().reshape(-1, 4),
            gt_boxes_original=np.asarray(sample.boxes, np.float32).reshape(-1, 4),
            original_size=tuple(int(v) for v in batch["size"][i]),
            top_classes=classes[i].tolist(),
            top_scores=scores[i].tolist(),
            gt_map=main[i, 0],
            top1_map=main[i, 1],
            variant_maps={name: maps[i] for name, maps in variants.items()},
            layer_maps=[maps[i] for maps in layers],
            image=images[i],
            sampled=index in sampled,
        ))
    return jobs


def _numpy(maps: torch.Tensor) -> np.ndarray:
    return maps.float().cpu().numpy()


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def input_images(batch: torch.Tensor, preprocess: Preprocess) -> np.ndarray:
    """The model-input images back as B x H x W x 3 uint8, for thumbnails."""
    mean = torch.tensor(preprocess.mean)[:, None, None]
    std = torch.tensor(preprocess.std)[:, None, None]
    pixels = ((batch * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().numpy()


class Accumulators:
    """Every running total of one evaluation; ``add`` also returns the image's table row."""

    def __init__(self, num_classes: int, depth: int, context: Context) -> None:
        self.depth = depth
        self.settings = context.settings
        self.preprocess = context.preprocess
        self.localization = LocalizationAccumulator(num_classes, self.settings.iou_threshold)
        self.maxboxacc = MaxBoxAccV2(context.sweep)
        self.pxap = PxAP(bins=len(context.sweep))
        self.threshold_curve = ThresholdCurve(context.curve, self.settings.iou_threshold)
        self.tally = Tally()

    def add(self, score: ImageScore) -> dict:
        job = score.job
        verdict, error = self.localization.add(job.gt_class, job.top_classes, score.top1, score.gt_known_iou)
        self.maxboxacc.add(score.best_ious)
        self.threshold_curve.add(score.curve_ious, verdict.top1_cls)
        if score.histograms is not None:
            self.pxap.add(*score.histograms)
        row = {
            "image_id": job.image_id, "image_path": job.image_path, "gt_class": job.gt_class,
            "gt_boxes": job.gt_boxes_original.tolist(), "width": job.original_size[0], "height": job.original_size[1],
            "top5_classes": job.top_classes, "top5_scores": job.top_scores,
            "pred_box": self._original(score.pred_box, job), "gt_known_box": self._original(score.gt_known_box, job),
            "iou": score.top1.iou, "iog": score.top1.iog, "iop": score.top1.iop, "gt_known_iou": score.gt_known_iou,
            "error_type": error, "correct_cls": verdict.top1_cls, "top1_loc": verdict.top1_loc,
            "top5_loc": verdict.top5_loc, "gt_known": verdict.gt_known,
        }
        named = [(name, iou) for name, iou in score.variant_ious.items()]
        named += [(f"layers_{k}", iou) for k, iou in enumerate(score.layer_ious, 1)]
        for name, iou in named:
            other = hits(job.top_classes, job.gt_class, iou, self.settings.iou_threshold)
            row[f"gt_known_{name}"] = other.gt_known
            for criterion in CRITERIA:
                self.tally.add(f"{name}:{criterion}", getattr(other, criterion))
        row["thumbnail"] = score.thumbnail
        return row

    def _original(self, box: np.ndarray, job: ImageJob) -> list[float]:
        return self.preprocess.boxes_to_original(box, job.original_size)[0].tolist()

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
             name: str | None = None, progress: bool = True, dataset_kind: str = "auto") -> Results:
    """Score ``model`` on ``dataset`` and write the results folder ``out``; returns it loaded.

    A CNN CAM model (depth 0) is scored with ``variant="cam"``, its only map: no other variants
    and no layer counts.
    """
    if dataset.num_classes != model.num_classes:
        raise DatasetError(f"the dataset has {dataset.num_classes} classes but the checkpoint "
                           f"{model.info.source or model.info.arch} has {model.num_classes}", str(dataset.root))
    check_variant(settings.variant, model.depth)
    if model.depth == 0 and settings.layers is not None:
        raise ValueError("a CNN CAM model has no attention blocks, so a layer selection does not apply")
    out = Path(out)
    subset = dataset if settings.limit is None else dataclasses.replace(dataset, samples=dataset.samples[:settings.limit])
    if len(subset) == 0:
        raise DatasetError(f"the {dataset.split} split has no images to evaluate", str(dataset.root))
    preprocess = model.info.transform
    chosen = select_layers(model.depth, settings.layers)
    main_layer_count = len(chosen) if settings.variant == "tscam" and chosen == list(range(len(chosen))) else None
    context = Context(settings, preprocess, cam_thresholds(settings.cam_curve_interval),
                      cam_thresholds(settings.threshold_curve_interval), out / THUMBNAIL_DIR, main_layer_count)
    context.thumbnail_dir.mkdir(parents=True, exist_ok=True)
    sampled = set(random.Random(settings.seed).sample(range(len(subset)), min(len(subset), settings.thumbnails)))
    loader = torch.utils.data.DataLoader(TorchWSOL(subset, preprocess), batch_size=settings.batch_size,
                                         num_workers=settings.loader_workers, collate_fn=collate,
                                         pin_memory=torch.cuda.is_available())
    device = next(model.parameters()).device
    totals = Accumulators(model.num_classes, model.depth, context)
    rows: list[dict] = []
    bar = tqdm(total=len(subset), unit="img", desc="evaluating", disable=not progress)
    start = time.perf_counter()
    with make_pool(settings) as pool:
        pending: deque[list[Future]] = deque()

        def drain_one() -> None:
            futures = pending.popleft()
            for future in futures:
                rows.append(totals.add(future.result()))
            bar.update(len(futures))

        for batch in loader:
            explanation = model.explain(batch["image"].to(device, non_blocking=True))
            images = input_images(batch["image"], preprocess)
            jobs = make_jobs(explanation, batch, subset, images, settings, sampled)
            pending.append([pool.submit(score_image, job, context) for job in jobs])
            while len(pending) > MAX_PENDING_BATCHES:
                drain_one()
        while pending:
            drain_one()
    wall = time.perf_counter() - start
    bar.close()
    summary = {
        "name": name or out.name,
        "checkpoint": checkpoint_identity(model),
        "dataset": {"path": str(dataset.root), "kind": _kind(dataset.root, dataset_kind), "split": dataset.split,
                    "num_images": len(rows), "skipped_annotations": len(dataset.skipped)},
        "settings": settings.record(),
        "metrics": totals.metrics(model.info.class_names),
        "versions": versions(),
        "wall_time_s": wall,
        "images_per_second": len(rows) / wall if wall > 0 else None,
        "device": str(device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return write_results(out, summary, rows)


def make_pool(settings: EvalSettings) -> Executor:
    """Threads by default (OpenCV releases the GIL); spawned processes when Python overhead dominates."""
    workers = max(1, settings.threads)
    if settings.pool == "process":
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    if settings.pool != "thread":
        raise ValueError(f"pool must be 'thread' or 'process', got {settings.pool!r}")
    return ThreadPoolExecutor(workers)


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


def parse_layers(text: str | None) -> LayerSelection:
    """--layers: "12" (the first 12 blocks), "first:k", "last:k", or block indices "0,3,5"."""
    if text is None or text in ("", "all"):
        return None
    if text.isdigit():
        return int(text)
    if "," in text or re.fullmatch(r"-?\d+", text):
        try:
            return [int(part) for part in text.split(",") if part.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"--layers {text!r}: not a list of block indices") from error
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
    parser.add_argument("--layers", type=parse_layers, default=None, help="k, first:k, last:k or 0,3,5 (default all)")
    parser.add_argument("--variant", choices=VARIANTS + CAM_VARIANTS,
                        help="map of the main setting (default: the model's own, tscam or a CNN's cam)")
    parser.add_argument("--iou-threshold", type=float, default=0.5)
    parser.add_argument("--cam-curve-interval", type=float, default=0.01, help="MaxBoxAccV2 / PxAP threshold step")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1),
                        help="workers for the per-image box work (default: cores, at most 8)")
    parser.add_argument("--pool", default="thread", choices=("thread", "process"), help="kind of those workers")
    parser.add_argument("--workers", type=int, default=min(4, (os.cpu_count() or 2) // 2),
                        help="data loader processes decoding images (0: in the main process)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--thumbnails", type=int, default=16, help="images sampled for success thumbnails")
    parser.add_argument("--on-error", default="raise", choices=("raise", "skip"), help="bad annotation lines")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.checkpoint, device=args.device, family=None)
        settings = EvalSettings(
            cam_threshold=args.threshold, layers=args.layers, variant=args.variant or variants_for(model.depth)[0],
            iou_threshold=args.iou_threshold, cam_curve_interval=args.cam_curve_interval,
            batch_size=args.batch_size, threads=args.threads, pool=args.pool, loader_workers=args.workers,
            thumbnails=args.thumbnails, limit=args.limit,
        )
        dataset = open_dataset(args.dataset, args.split, args.kind, args.on_error)
        results = evaluate(model, dataset, args.out, settings, name=args.name, dataset_kind=args.kind)
    except (TSCAMError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report(results))
    return 0


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
