"""The evaluation's runtime: the model in the main thread, a pool scoring the batches before, a thread
decoding the batches after, and the results folder written at the end.

The model runs as one traced graph that needs no interpreter lock while it runs
(``graph.graph_explain``), while a pool (``ScoringPool.of``: a few threads on a small machine,
forked processes from ``PROCESS_POOL_CORES`` cores on, where threads stop scaling on the GIL; at a
lower priority, so that the model is not kept waiting on few cores) scores slices of the batches
before with ``scoring.score_images``. A thread decodes images ahead of the model (data-loader
processes where cores are to spare, ``loader_workers``); accumulators keep only counts and
histograms, never maps.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import methods
from ..boxes import contour_sweeps, upsample_grays, upsample_map
from ..cnn_cam import CNNCAM
from ..datasets import Sample, TorchWSOL, WSOLDataset, collate, load_mask, object_pixels
from ..datasets.common import Skip
from ..errors import DatasetError
from ..explanation import Explanation, MapSpec
from ..graph import graph_explain
from ..images import load_image
from ..metrics import cam_thresholds, score_histograms
from ..model import TSCAM
from ..results import SUMMARY_FILE, Results, ResultsError, write_results
from ..transforms import Preprocess
from .maps import named_maps, scored_maps
from .scoring import ImageMaps, Protocol, score_images
from .settings import EvalSettings, can_fork
from .summary import (
    Accumulators,
    ImageInfo,
    checkpoint_identity,
    dataset_kind,
    relative,
    run_summary,
    skip_records,
)
from .thumbnails import discard_staged, draw_thumbnail, input_images, replace_thumbnails, stage_thumbnails

#: How many batches may wait for the thread pool before the model pauses (bounds memory).
MAX_PENDING_BATCHES = 2
#: How many batches the decoding thread may run ahead of the model.
PREFETCH_BATCHES = 2


@dataclass(frozen=True)
class Context:
    """What every scoring job shares (read-only)."""

    settings: EvalSettings
    preprocess: Preprocess
    protocol: Protocol
    named: dict[str, MapSpec]  # every named map's spec (``maps.named_maps``)
    thumbnail_dir: Path
    dataset_root: Path
    depth: int
    num_classes: int

    def accumulators(self) -> Accumulators:
        protocol = self.protocol
        return Accumulators(self.num_classes, self.depth, self.preprocess, protocol.sweep, protocol.curve,
                            protocol.iou_threshold, views=self.settings.scored.spec is not None)


@dataclass
class BatchJob:
    """A slice of one batch for the scoring pool: token-resolution maps (B x M x h x w, channels as
    ``Context.protocol`` lays them out) and the ground truth."""

    samples: list[Sample]
    labels: list[int]
    top_classes: list[list[int]]
    top_scores: list[list[float]]
    maps: np.ndarray
    inputs: np.ndarray | None  # B x 3 x H x W model input for thumbnails; None: decoded again (a process pool)
    gt_boxes: list[np.ndarray]  # input frame
    sizes: list[tuple[int, int]]  # original (width, height)
    sampled: list[bool]


def make_jobs(model: torch.nn.Module, images: torch.Tensor, explanation: Explanation, batch: dict,
              dataset: WSOLDataset, context: Context, sampled: set[int], parts: int) -> list[BatchJob]:
    """A batch's maps for the pool, in ``parts`` slices (so that the last batch's work spreads too); the
    classes are ranked by ``explanation``'s logits whichever method makes the maps."""
    labels = batch["label"].to(explanation.logits.device)
    scores, classes = explanation.top_classes(5)
    maps = scored_maps(context.settings.scored, model, images, explanation, labels, classes[:, 0], context.named,
                       context.protocol)
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


def score_job(job: BatchJob, context: Context) -> tuple[list[dict], Accumulators]:
    """A pool job: the slice's records (``scoring.score_images``), thumbnails, table rows and its own totals.

    The totals are counts, so the evaluation adds each slice's to its own (``Accumulators.merge``)
    and the model's thread does no per-image bookkeeping. Every failure gets a thumbnail, and so
    does each image sampled for one.
    """
    records = score_images([ImageMaps(job.maps[i], job.labels[i], job.top_classes[i], job.gt_boxes[i],
                                      object_mask(sample, job.sizes[i], context.preprocess))
                            for i, sample in enumerate(job.samples)], context.protocol)
    totals, rows, images = context.accumulators(), [], None
    for i, (sample, record) in enumerate(zip(job.samples, records, strict=True)):
        thumbnail = None
        if job.sampled[i] or not record.hits.top1_loc:
            if job.inputs is None:  # a process pool: the file decoded again costs less than pickling every input
                pixels = np.asarray(context.preprocess.geometry(load_image(sample.path))[0])
            else:
                if images is None:  # back to pixels once per job, and only where a thumbnail is drawn
                    images = input_images(job.inputs, context.preprocess)
                pixels = images[i]
            top01 = upsample_map(job.maps[i, 1], context.protocol.input_size)  # the top-1 class's map
            thumbnail = draw_thumbnail(pixels, sample.image_id, job.gt_boxes[i], top01, record.pred_box,
                                       context.settings.thumbnail_size, context.thumbnail_dir)
        info = ImageInfo(sample.image_id, relative(sample.path, context.dataset_root), sample.boxes, job.sizes[i],
                         job.top_scores[i], thumbnail)
        rows.append(totals.add(record, info))
    return rows, totals


def object_mask(sample: Sample, size: tuple[int, int], preprocess: Preprocess) -> np.ndarray | None:
    """The image's object pixels moved into the input frame, for PxAP; None where the dataset has no masks."""
    if sample.mask_path is None:
        return None
    mask = load_mask(sample.mask_path)
    if mask.size != size:
        raise DatasetError(f"mask is {mask.size[0]}x{mask.size[1]} but its image is {size[0]}x{size[1]}",
                           str(sample.mask_path))
    return object_pixels(preprocess.geometry(mask)[0])


def evaluate(model: TSCAM | CNNCAM, dataset: WSOLDataset, out: str | Path, settings: EvalSettings | None = None,
             name: str | None = None, progress: bool = True, dataset_kind: str = "auto",
             overwrite: bool = False) -> Results:
    """Score ``model`` on ``dataset`` and write the results folder ``out`` (see ``_evaluate``); a run
    that fails leaves no staged thumbnails behind. No ``settings``: ``EvalSettings()``."""
    try:
        return _evaluate(model, dataset, Path(out), settings or EvalSettings(), name, progress, dataset_kind, overwrite)
    except BaseException:
        discard_staged(Path(out))
        raise


def _evaluate(model: TSCAM | CNNCAM, dataset: WSOLDataset, out: Path, settings: EvalSettings, name: str | None,
              progress: bool, kind: str, overwrite: bool) -> Results:
    """Score ``model`` on ``dataset`` and write the results folder ``out``; returns it loaded.

    A CNN CAM model (depth 0) is scored with ``MapSpec("cam")``, its only map: no other variants
    and no layer counts. A method that is no view of the explanation (``settings.scored``: rollout,
    a gradient method) is run on each batch beside the eager explain pass, which ranks the classes;
    its summary has no variants and no layer counts either. ``settings.model_threads`` sets torch's
    thread count for the run and restores it after: with a small model on few cores, 1 leaves the
    other cores to the scoring (the model's arithmetic may round differently at another thread count).

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
    methods.for_model(settings.scored, model)
    if (out / SUMMARY_FILE).exists() and not overwrite:
        raise ResultsError("already holds evaluation results; pick another --out or pass --overwrite", out)
    subset = dataset if settings.limit is None else dataclasses.replace(dataset, samples=dataset.samples[:settings.limit])
    if len(subset) == 0:
        raise DatasetError(f"the {dataset.split} split has no images to evaluate", str(dataset.root))
    context = make_context(model, settings, Path(dataset.root), stage_thumbnails(out))
    sampled = set(random.Random(settings.seed).sample(range(len(subset)), min(len(subset), settings.thumbnails)))
    device = next(model.parameters()).device
    totals = context.accumulators()
    rows: list[dict] = []
    skipped: list[Skip] = list(dataset.skipped)
    bar = tqdm(total=len(subset), unit="img", desc="evaluating", disable=not progress)
    start = time.perf_counter()
    with (torch_threads(settings.model_threads), torch.no_grad(), make_pool(settings) as pool,
          ThreadPoolExecutor(1) as decoder, bar):
        pending: deque[list[Future]] = deque()

        def drain_one() -> None:
            for future in pending.popleft():
                scored, job_totals = future.result()
                rows.extend(scored)
                totals.merge(job_totals)
                bar.update(len(scored))

        for batch in decoded_batches(TorchWSOL(subset, context.preprocess, report_failures=True), settings, decoder):
            skipped += undecoded(batch, subset.on_error)
            bar.update(len(batch["failed"]))
            if "image" not in batch:
                continue
            images = batch["image"].to(device, non_blocking=True)
            explanation = (graph_explain(model, images, settings.batch_size) if settings.uses_graph
                           else model.explain(images))
            jobs = make_jobs(model, images, explanation, batch, subset, context, sampled,
                             parts=settings.scoring.workers)
            pending.append([pool.submit(score_job, job, context) for job in jobs])
            while len(pending) > MAX_PENDING_BATCHES:
                drain_one()
        while pending:
            drain_one()
    wall = time.perf_counter() - start
    if not rows:
        first = skipped[len(dataset.skipped)][2]
        raise DatasetError(f"no image of the {dataset.split} split could be decoded (first: {first})", str(dataset.root))
    identity = {"path": str(dataset.root), "kind": dataset_kind(dataset.root, kind), "split": dataset.split,
                "num_images": len(rows), "skipped_annotations": len(dataset.skipped),
                "skipped_images": len(skipped) - len(dataset.skipped), "skipped": skip_records(skipped, dataset.root)}
    summary = run_summary(name or out.name, checkpoint_identity(model), identity, settings.record(),
                          totals.metrics(model.info.class_names), len(rows), wall, str(device))
    replace_thumbnails(out)
    return write_results(out, summary, rows)


def make_context(model: TSCAM | CNNCAM, settings: EvalSettings, dataset_root: Path, thumbnail_dir: Path) -> Context:
    """The protocol of ``settings`` for ``model``: its input size, every named map of its depth."""
    preprocess = model.info.transform
    named, main_names = named_maps(settings.scored.spec, model.depth)
    protocol = Protocol(tuple(preprocess.input_size), settings.cam_threshold, settings.iou_threshold,
                        settings.box_convention, cam_thresholds(settings.cam_curve_interval),
                        cam_thresholds(settings.threshold_curve_interval), tuple(named), main_names)
    return Context(settings, preprocess, protocol, named, thumbnail_dir, dataset_root, model.depth, model.num_classes)


def undecoded(batch: dict, on_error: str) -> list[Skip]:
    """The batch's images that could not be decoded, to skip; with ``on_error`` "raise" the first
    one's error instead, raised here in the main process as the same one line wherever it was decoded."""
    if batch["failed"] and on_error == "raise":
        raise DatasetError(batch["failed"][0][2])
    return batch["failed"]


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
    method = "fork" if can_fork() else "spawn"
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
