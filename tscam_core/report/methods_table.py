"""Every localization method of ``tscam_core.methods`` on the benchmark (issue #22): accuracy with
intervals at the CAM threshold chosen on the val split, and what its maps cost per image.

The cost comes from ``benchmarks/methods.py``'s JSON (``MethodCost`` is its row), measured on a
model of the evaluated checkpoint's architecture and input size: time and memory depend on the
shapes, not on the weights' values.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from ..checkpoint import ModelInfo
from ..results import Results
from .columns import column_hits, interval, paired
from .markdown import cell, pct, row, rule

#: The batch size whose cost the table shows.
TABLE_BATCH = 16
#: The method whose GT-known Loc the others are compared with, image by image.
REFERENCE = "tscam"


@dataclass(frozen=True)
class MethodCost:
    """One method's maps for one target class per image, on one model at one batch size."""

    subject: str  # the model measured, as the benchmark names it
    arch: str
    input_size: tuple[int, int]
    num_classes: int
    batch: int
    method: str
    ms_per_image: float
    peak_memory_bytes: int
    time_vs_explain: float  # time / TS-CAM's explain (every class's maps from one forward)
    memory_vs_explain: float

    @classmethod
    def from_dict(cls, data: dict) -> MethodCost:
        return cls(**{**data, "input_size": tuple(data["input_size"])})

    def to_dict(self) -> dict:
        return asdict(self)


def matching_costs(path: Path, *infos: ModelInfo) -> tuple[dict[str, MethodCost], str | None]:
    """The benchmark's costs at ``TABLE_BATCH`` on a model shaped as one of ``infos`` (architecture, input
    size, classes: the table's rows come from several checkpoints, a CNN's among them), by method, and
    the command that measured them; empty where the file or such a model is missing."""
    if not path.is_file():
        return {}, None
    data = json.loads(path.read_text(encoding="utf-8"))
    shapes = {(info.arch, tuple(info.transform.input_size), info.num_classes) for info in infos}
    costs = {cost.method: cost for cost in map(MethodCost.from_dict, data["costs"])
             if (cost.arch, cost.input_size, cost.num_classes) in shapes and cost.batch == TABLE_BATCH}
    return costs, data.get("command")


class MethodRun(NamedTuple):
    """A method's two evaluations: on the val split (its threshold chosen there), then on test at it."""

    name: str
    label: str
    threshold: float
    test: Results
    commands: list[list[str]]  # the val run's, then the test run's


def cost_cells(cost: MethodCost | None) -> list[str]:
    if cost is None:
        return ["not measured", ""]
    return [f"{cost.ms_per_image:.2f} ({cost.time_vs_explain:.1f}x)",
            f"{cost.peak_memory_bytes / 2**20:.1f} MiB ({cost.memory_vs_explain:.1f}x)"]


def methods_table(runs: list[MethodRun], costs: dict[str, MethodCost], benchmark: str | None) -> list[str]:
    """The section: one row per method, the paired GT-known difference from TS-CAM where TS-CAM ran too."""
    reference = next((run.test for run in runs if run.name == REFERENCE), None)
    lines = ["## Localization methods (issue #22)", "",
             row("method", "Top-1 Loc", "GT-known Loc", "GT-known - TS-CAM (paired)", "MaxBoxAccV2 mean", "PxAP",
                 "CAM threshold", f"ms per image (batch {TABLE_BATCH}; x explain)", "peak memory (x explain)"),
             rule(9)]
    for run in runs:
        gt_known = column_hits(run.test, "gt_known")
        difference = ("-" if reference is None or run.name == REFERENCE
                      else cell(paired(gt_known, column_hits(reference, "gt_known"))))
        measured = run.test.parsed.metrics
        lines.append(row(run.label, cell(interval(column_hits(run.test, "top1_loc"))), cell(interval(gt_known)),
                         difference, pct(measured.maxboxacc_v2.mean if measured.maxboxacc_v2 else None),
                         pct(measured.pxap), f"{run.threshold:g}", *cost_cells(costs.get(run.name))))
    lines += ["", "Each method's CAM threshold is the one at which its GT-known Loc is best on the val split "
              "(an evaluation of that split, then one of the test split at that threshold). A row that names a "
              "checkpoint is that model's (CNN CAM and SCM are trained as the shipped one by `train/run.py --preset "
              "fashion-cnn` or `fashion-scm`), scored on the same images, so its difference from TS-CAM is paired "
              "too. MaxBoxAccV2 and PxAP "
              "have no interval (no per-image column). Cost: the maps of one class per image, median time and peak "
              "memory beside TS-CAM's explain (the maps of every class from one forward), measured side by side"
              + (" by:" if benchmark else "; not measured for this architecture: run `python benchmarks/methods.py`."),
              ""]
    if benchmark:
        lines += ["```", benchmark, "```", ""]
    lines += ["The same table for an ImageNet DeiT-S (ILSVRC 2012 val) has not been made: it needs the ILSVRC images "
              "and an ImageNet-trained DeiT-S's weights, which no machine of this project holds or can download (the "
              "GPU machine sometimes lent reaches nothing outside itself). The evaluations:"]
    return lines + ["", "```", *(shlex.join(c) for run in runs for c in run.commands), "```"]
