"""What ``explain`` costs: vs the same model's logits-only forward, and vs the official explicit approach.

    python benchmarks/explain_cost.py [--device cuda] [--batch-size 16] [--model deit_small_patch16_224]

Prints, from one run with the candidates interleaved: explain time / logits-only
time (goal <= 1.03), explain peak memory / logits-only peak memory (goal <= 1.05), and
explicit approach / explain for time and peak memory. The time row's detail also gives the
logits-only forward with one no-op hook per block where explain hooks (placed and removed
per call, as explain does): the floor of any hook-based capture, which on a small model is
most of explain's cost. Weights are random (pretrained=False): cost does not depend on what
the weights are.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from benchmarks.explicit import explicit_explain
from benchmarks.measure import (
    TIMING_METHOD,
    Budget,
    machine_description,
    mebibytes,
    memory_method,
    milliseconds,
    peak_memory,
    random_images,
    time_interleaved,
)
from benchmarks.report import Goal, Row, markdown_table
from tscam_core import TSCAM, ModelInfo, build_model

EXPLAIN_TIME_GOAL = Goal("<=", 1.03)
EXPLAIN_MEMORY_GOAL = Goal("<=", 1.05)
EXPLICIT_TIME_GOAL = Goal(">", 1.0)
METHOD = ("explain, logits-only forward (torch.no_grad) and the explicit approach (benchmarks/explicit.py: timm's "
          "unfused attention, every block's B x H x N x N matrix kept, stacked, averaged over heads) on one fixed "
          "random batch, interleaved; with them, the logits-only forward with a no-op hook on every block's "
          "attn.qkv (placed and removed per call), the floor of a hook-based capture")


@torch.no_grad()
def logits_only(model: TSCAM, images: torch.Tensor) -> torch.Tensor:
    return model(images)


@torch.no_grad()
def logits_with_empty_hooks(model: TSCAM, images: torch.Tensor) -> torch.Tensor:
    """The logits-only forward plus explain's hook traffic (one per block on attn.qkv) with nothing recorded."""
    handles = [block.attn.qkv.register_forward_hook(_ignore) for block in model.blocks]
    try:
        return model(images)
    finally:
        for handle in handles:
            handle.remove()


def _ignore(_module: torch.nn.Module, _inputs: tuple, _output: torch.Tensor) -> None:
    return None


def explain_cost(
    model: TSCAM, label: str, batch: int, size: tuple[int, int], budget: Budget, with_logits: bool = True
) -> list[Row]:
    """Section 1 (explain vs logits-only, when ``with_logits``) and section 2 (explicit vs explain) rows."""
    images = random_images(batch, size, budget.device)
    candidates = {"explain": lambda: model.explain(images), "explicit": lambda: explicit_explain(model, images)}
    if with_logits:
        candidates["logits"] = lambda: logits_only(model, images)
        candidates["hooks"] = lambda: logits_with_empty_hooks(model, images)
    timings = time_interleaved(candidates, budget.repeats, budget.warmup, budget.device)
    memory = {name: peak_memory(run, budget.device) for name, run in candidates.items() if name != "hooks"}
    setting = f"{size[0]}x{size[1]} px, {model.grid_size(*size)[0] * model.grid_size(*size)[1]} tokens"

    def times(first: str, second: str) -> str:
        return f"{first} {milliseconds(timings.median(first))}, {second} {milliseconds(timings.median(second))}"

    def sizes(first: str, second: str) -> str:
        return f"{first} {mebibytes(memory[first])}, {second} {mebibytes(memory[second])}"

    rows = []
    if with_logits:
        rows += [
            Row(1, label, batch, setting, "explain / logits-only time", timings.ratio("explain", "logits"),
                goal=EXPLAIN_TIME_GOAL,
                detail=f"{times('explain', 'logits')}; no-op qkv hooks alone {timings.ratio('hooks', 'logits'):.3f}x"),
            Row(1, label, batch, setting, "explain / logits-only peak memory", memory["explain"] / memory["logits"],
                goal=EXPLAIN_MEMORY_GOAL, detail=sizes("explain", "logits")),
        ]
    rows += [
        Row(2, label, batch, setting, "explicit / explain time", timings.ratio("explicit", "explain"),
            goal=EXPLICIT_TIME_GOAL, detail=times("explicit", "explain")),
        Row(2, label, batch, setting, "explicit / explain peak memory", memory["explicit"] / memory["explain"],
            detail=sizes("explicit", "explain")),
    ]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deit_small_patch16_224", help="timm ViT architecture (random weights)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=224, help="square input side in pixels")
    parser.add_argument("--num-classes", type=int, default=200, help="classes of the TS-CAM head (CUB: 200)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds, candidates interleaved")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 (default) keeps ratios steady when other processes share the "
                             "cores (with 2 threads on 2 busy cores every parallel region waits for a descheduled "
                             "thread); 0 = torch's choice")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_model(ModelInfo(args.model, args.num_classes)).to(device).eval()
    budget = Budget(device, args.repeats, args.warmup)
    rows = explain_cost(model, args.model, args.batch_size, (args.input_size, args.input_size), budget)

    print("$ python " + shlex.join(sys.argv))
    print(f"machine: {machine_description(device)}")
    print(f"timing: {TIMING_METHOD}")
    print(f"peak memory: {memory_method(device)}")
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
