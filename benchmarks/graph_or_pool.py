"""Benchmarks section 5 with the scoring pool's kind and the model's trace varied: does a process pool
make the traced graph (tscam_core.graph) unnecessary?

    python benchmarks/graph_or_pool.py [--device cuda] [--batch 16] [--dataset data/fashion-cluttered]

The shipped model on its test split, section 5's full plan (at least 128 images and about 2 s of
forward-only work, 9 timed calls after 2 warm-ups), once per combination of thread or process pool
and traced or eager model: each line is section 5's row (full evaluation / forward-only images/s)
for that setting. The trace only helps where scoring threads share the model's interpreter lock.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.evaluation_speed import evaluation_speed
from benchmarks.measure import Budget
from tscam_core import load_model
from tscam_core.recipes import FASHION_DATA

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"thread pool, traced graph (the default below 8 cores)": {"pool": "thread"},
            "thread pool, eager": {"pool": "thread", "graph": False},
            "process pool, traced graph": {"pool": "process"},
            "process pool, eager": {"pool": "process", "graph": False}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dataset", type=Path, default=ROOT / FASHION_DATA)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "tscam_fashion.safetensors")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as benchmarks/run.py: steady ratios on shared cores
    device = torch.device(args.device)
    model = load_model(args.checkpoint, device=args.device).eval()
    with tempfile.TemporaryDirectory(prefix="tscam-graph-") as work:
        for name, settings in SETTINGS.items():
            row = evaluation_speed(model, "shipped", args.batch, 128, Budget(device, 9, 2), Path(work), args.dataset,
                                   2.0, **settings)[0]
            print(f"{name}: {row.value:.3f}x; {row.detail}", flush=True)


if __name__ == "__main__":
    main()
