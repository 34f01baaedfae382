"""Evaluation images/s by scoring pool (kind and size), beside the model's explain pass alone.

    python benchmarks/scoring_pools.py [--device cuda] [--images 1024] [--dataset PATH] [--doc docs/scoring-pools.md]

What ``EvalSettings.pool="auto"`` and the default pool sizes rest on. Each pool scores the same
images in one ``evaluate`` call, its start included; enough images that the start does not decide.
deit_small_patch16_224 (random weights, 200 classes) scores generated CUB-like 500 x 375 JPEGs;
the shipped model scores ``--dataset`` (its own test split, default data/fashion-cluttered) where
present. The explain row is the model's traced explain pass on random inputs at the same batch
size: what the evaluation would reach if scoring cost nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.evaluation_speed import write_cub_folder
from benchmarks.measure import machine_description, synchronize
from tscam_core import TSCAM, ModelInfo, build_model, load_model
from tscam_core.datasets import WSOLDataset, open_dataset
from tscam_core.evaluate import EvalSettings, ScoringPool, evaluate, usable_cores
from tscam_core.graph import graph_explain
from tscam_core.recipes import FASHION_DATA

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64


def pools(cores: int) -> list[ScoringPool]:
    """Thread pools of 2, 4 and 8, and process pools of half the cores and of all but one."""
    sizes = sorted({max(1, cores // 2), max(1, cores - 1)})
    return [ScoringPool("thread", n) for n in (2, 4, 8)] + [ScoringPool("process", n) for n in sizes]


def explain_rate(model: TSCAM, device: torch.device, rounds: int = 10) -> float:
    images = torch.randn(BATCH, 3, *model.info.transform.input_size, device=device)
    for _ in range(2):
        graph_explain(model, images, BATCH)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(rounds):
        graph_explain(model, images, BATCH)
    synchronize(device)
    return rounds * BATCH / (time.perf_counter() - start)


def evaluation_rate(model: TSCAM, dataset: WSOLDataset, pool: ScoringPool, out: Path) -> float:
    settings = EvalSettings(batch_size=BATCH, pool=pool.kind, threads=pool.workers)
    start = time.perf_counter()
    evaluate(model, dataset, out, settings, progress=False)
    return len(dataset) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=1024, help="generated photos for deit_small")
    parser.add_argument("--dataset", type=Path, default=ROOT / FASHION_DATA, help="the shipped model's test split")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "scoring-pools.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    torch.manual_seed(0)
    subjects = [("deit_small_patch16_224", build_model(ModelInfo("deit_small_patch16_224", 200)), None)]
    shipped = ROOT / "checkpoints" / "tscam_fashion.safetensors"
    if shipped.is_file() and args.dataset.is_dir():
        subjects.append(("shipped", load_model(shipped), args.dataset))
    cores = usable_cores()
    lines = ["| model | images | scoring pool | evaluation images/s | explain alone images/s |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="tscam-pools-") as work:
        for label, model, root in subjects:
            model.to(device).eval()
            if root is None:
                dataset = open_dataset(write_cub_folder(Path(work) / "photos", args.images, model.num_classes), "test")
            else:
                dataset = open_dataset(root, "test")
                dataset = dataclasses.replace(dataset, samples=dataset.samples[:args.images])
            alone = explain_rate(model, device)
            for number, pool in enumerate(pools(cores)):
                rate = evaluation_rate(model, dataset, pool, Path(work) / f"{label}-{number}")
                lines.append(f"| {label} | {len(dataset)} | {pool.kind}, {pool.workers} workers | {rate:.0f} | {alone:.0f} |")
                print(lines[-1], flush=True)
    machine = machine_description(device)
    command = "python benchmarks/scoring_pools.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    page = "\n".join([
        "# Scoring pools", "",
        "Written by `" + command.strip() + "` (benchmarks/scoring_pools.py; its docstring says what is timed).", "",
        f"Machine: {machine['cpu']}, {cores} usable cores, device `{device}`"
        + (f" ({machine['gpu']})" if "gpu" in machine else "") + f"; torch {machine['versions']['torch']}, "
        f"Python {machine['python']}. Batch size {BATCH}, one torch thread.", "",
        *lines, "",
        "Each evaluation is one call, its pool's start included. Process pools are forked (Linux).", "",
    ])
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(page)
    print(f"wrote {args.doc}")
    return page


if __name__ == "__main__":
    main()
