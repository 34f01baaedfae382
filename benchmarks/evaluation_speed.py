"""Section 5: full evaluation images/s vs forward-only images/s on the same number of images.

The full evaluation is the project's own (tscam_core.evaluate.evaluate, its default settings
but for the batch size): decoding, preprocessing, the forward, every box and metric, the
Parquet table and the thumbnails, timed as one call. Forward-only runs the same model on
the same number of already-preprocessed images at the same batch size, eagerly and as a traced
graph; the faster is the baseline, since the evaluation runs its explain pass as a traced graph
(tscam_core.graph) and that alone must not flatter the ratio. The row's detail adds
the CPU time per image of each (all threads, and finished child processes): on a busy machine
the wall-clock ratio drifts with the load, the CPU cost much less. It also gives the ceiling of
the ratio on this machine's usable cores: the evaluation needs at least its CPU time per image
divided by the cores, against the baseline's wall time per image (on a CPU, its CPU time; on a
GPU, the GPU's), reached only if every core were busy all the time: when the ceiling is under
the goal, no scheduling can meet it, only less CPU work per image or more cores. Last, the CPU
time per image beyond the forward (the evaluation's less the baseline's: decoding, scoring,
writing), which sizes a machine whose accelerator runs the forward: that many ms per image is
that many cores kept busy per 1000 images/s.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import statistics
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.measure import Budget, milliseconds, photo, random_images, time_interleaved, usable_cores
from benchmarks.report import Goal, Row, Skipped
from tscam_core import TSCAM
from tscam_core.datasets import WSOLDataset, open_dataset

EVALUATION_GOAL = Goal(">=", 0.85)
#: A CUB-like photo size (CUB's images are about 500 x 375).
PHOTO_SIZE = (500, 375)
METHOD = ("tscam_core.evaluate.evaluate (default settings, batch size as given, no progress bar) timed as one call, "
          "results folder written, vs the model's logits forward on as many preprocessed images, the faster of its "
          "eager run and its traced graph (as the evaluation runs the model); on the model's "
          "own test split where given, else on generated CUB-layout JPEGs of 500 x 375 px; on at least 128 images (32 "
          "with --quick) "
          "and, in the full run, on enough whole batches for about 2 s of forward-only work, so that filling and "
          "draining the pipeline is a small part of the run, as in the evaluation of a test split; CPU ms per image "
          "(process and finished children, median over the timed calls) in the detail")


def write_cub_folder(root: Path, num_images: int, num_classes: int, size: tuple[int, int] = PHOTO_SIZE,
                     seed: int = 0) -> Path:
    """A CUB-layout test split of photo-like JPEGs with one box each: what the evaluation reads, at photo size."""
    rng = np.random.default_rng(seed)
    width, height = size
    (root / "images").mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {name: [] for name in (
        "images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt")}
    for image_id in range(1, num_images + 1):
        label = (image_id - 1) % num_classes + 1
        relative = f"{image_id:05d}.jpg"
        photo(width, height, seed + image_id).save(root / "images" / relative, "JPEG", quality=90)
        x, y = rng.integers(0, width // 2), rng.integers(0, height // 2)
        lists["images.txt"].append(f"{image_id} {relative}")
        lists["image_class_labels.txt"].append(f"{image_id} {label}")
        lists["train_test_split.txt"].append(f"{image_id} 0")
        lists["bounding_boxes.txt"].append(f"{image_id} {x} {y} {width // 3} {height // 3}")
    lists["classes.txt"] = [f"{c} class_{c}" for c in range(1, num_classes + 1)]
    for name, lines in lists.items():
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def evaluation_speed(model: TSCAM, label: str, batch: int, images: int, budget: Budget, workdir: Path,
                     dataset_root: Path | None = None, seconds: float = 0.0, **settings: object) -> list[Row]:
    """The section-5 row: at least ``images`` images, and enough for ``seconds`` of forward-only work.

    A real evaluation runs over a test split; a run of a few batches is mostly filling and
    draining the pipeline (the first batch decoded before the model can start, the last one
    scored after it stops, the folder written), which ``seconds`` keeps to a small part.
    """
    try:
        from tscam_core.evaluate import EvalSettings, evaluate
    except ImportError as error:
        raise Skipped(f"tscam_core.evaluate is not available ({error})") from error
    images = max(images, images_for(model, batch, seconds, budget.device))
    if dataset_root is not None and dataset_root.is_dir():
        dataset, origin = open_dataset(dataset_root, split="test"), f"{dataset_root.name} test split"
    else:
        root = write_cub_folder(workdir / f"photos-{model.num_classes}", images, model.num_classes)
        dataset, origin = open_dataset(root, split="test"), f"generated {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEGs"
    dataset = _first(dataset, images)
    count = len(dataset)
    chosen = EvalSettings(batch_size=batch, **settings)  # ``settings``: other than the defaults (graph_or_pool.py)
    batches = [random_images(min(batch, count - start), model.info.transform.input_size, budget.device, seed=start)
               for start in range(0, count, batch)]

    graphs = {tuple(inputs.shape): traced_forward(model, inputs) for inputs in batches}

    @torch.no_grad()
    def forward_only() -> None:
        for inputs in batches:
            model(inputs)

    @torch.no_grad()
    def graph_forward_only() -> None:
        with torch.jit.optimized_execution(False):
            for inputs in batches:
                graphs[tuple(inputs.shape)](inputs)

    cpu: dict[str, list[float]] = {"evaluation": [], "forward": [], "graph forward": []}
    timings = time_interleaved(
        {"evaluation": _cpu_timed(cpu["evaluation"], lambda: evaluate(  # a new folder each call, as for a user
            model, dataset, tempfile.mkdtemp(prefix="results-", dir=workdir), chosen, progress=False)),
         "forward": _cpu_timed(cpu["forward"], forward_only),
         "graph forward": _cpu_timed(cpu["graph forward"], graph_forward_only)},
        budget.repeats, budget.warmup, budget.device,
    )
    # The evaluation runs the model as a traced graph (EvalSettings.graph): the baseline is the
    # faster of the eager forward and the traced one, so the graph's own speed cannot help the ratio.
    baseline = min(("forward", "graph forward"), key=timings.median)
    rate = {name: count / timings.median(name) for name in cpu}
    per_image = {name: 1e3 * statistics.median(seconds[budget.warmup:]) / count for name, seconds in cpu.items()}
    cores = usable_cores()
    wall_per_image = 1e3 * timings.median(baseline) / count
    ceiling = min(1.0, cores * wall_per_image / per_image["evaluation"])
    beyond = max(0.0, per_image["evaluation"] - per_image[baseline])
    return [Row(
        5, label, batch, f"{count} images ({len(batches)} batches), {origin}", "full evaluation / forward-only images/s",
        timings.ratio(baseline, "evaluation"), goal=EVALUATION_GOAL,
        detail=f"evaluation {rate['evaluation']:.1f} img/s ({milliseconds(timings.median('evaluation'))}), "
               f"forward {rate['forward']:.1f} img/s ({milliseconds(timings.median('forward'))}), traced forward "
               f"{rate['graph forward']:.1f} img/s ({milliseconds(timings.median('graph forward'))}); baseline: "
               f"the faster, {baseline}; CPU per image: evaluation {per_image['evaluation']:.2f} ms, "
               f"{baseline} {per_image[baseline]:.2f} ms; ceiling with {cores} cores always busy: {ceiling:.3f}; "
               f"CPU per image beyond the forward: {beyond:.2f} ms (cores kept busy per 1000 img/s)",
    )]


def images_for(model: TSCAM, batch: int, seconds: float, device: torch.device) -> int:
    """Whole batches of images that keep the model's forward busy for about ``seconds``."""
    if seconds <= 0:
        return 0
    inputs = random_images(batch, model.info.transform.input_size, device)
    with torch.no_grad():
        model(inputs)  # warm-up
        timings = time_interleaved({"forward": lambda: model(inputs)}, 3, 0, device)
    return batch * math.ceil(seconds / timings.median("forward"))


def traced_forward(model: TSCAM, inputs: torch.Tensor) -> torch.jit.ScriptModule:
    """The model's logits forward as a traced graph, run as the evaluation runs its explain graph."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice
        return torch.jit.trace(model, (inputs,), check_trace=False)


def _cpu_timed(seconds: list[float], run: Callable[[], object]) -> Callable[[], None]:
    """``run``, appending the CPU seconds it used (this process's threads and its finished children)."""
    def call() -> None:
        start = _cpu_seconds()
        run()
        seconds.append(_cpu_seconds() - start)
    return call


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _first(dataset: WSOLDataset, count: int) -> WSOLDataset:
    """The first ``count`` samples: a benchmark needs a fixed amount of work, not the whole split."""
    return dataclasses.replace(dataset, samples=dataset.samples[:count])
