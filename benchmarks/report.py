"""Benchmark rows with their goals, and the table, JSON and docs page made from them."""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_COMPARISONS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


class Skipped(Exception):
    """A section that cannot run here (a module not written yet, no checkpoint); the reason becomes a note."""


@dataclass(frozen=True)
class Goal:
    """A target such as ``<= 1.03`` that a measured value meets or misses."""

    op: str
    value: float

    def __post_init__(self) -> None:
        if self.op not in _COMPARISONS:
            raise ValueError(f"unknown comparison {self.op!r}")

    def met_by(self, measured: float) -> bool:
        return bool(_COMPARISONS[self.op](measured, self.value))

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


@dataclass
class Row:
    """One measured figure: what was compared, on what, the value and whether it meets its goal."""

    section: int
    model: str
    batch: int
    setting: str
    metric: str
    value: float
    unit: str = "x"
    goal: Goal | None = None
    detail: str = ""

    @property
    def met(self) -> bool | None:
        return None if self.goal is None else self.goal.met_by(self.value)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["goal"] = None if self.goal is None else str(self.goal)
        data["met"] = self.met
        return data


@dataclass
class Report:
    """Everything one benchmark run produced, as written to JSON and docs/performance.md."""

    command: str
    machine: dict[str, Any]
    methods: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command, "machine": self.machine, "methods": self.methods,
            "rows": [row.to_dict() for row in self.rows], "notes": self.notes,
            "wall_time_s": self.wall_time_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """A report read back from its JSON, e.g. to re-render the page (``run.py --render``)."""
        rows = [Row(**{key: value for key, value in row.items() if key != "met"} | {"goal": _parse_goal(row["goal"])})
                for row in data["rows"]]
        return cls(data["command"], data["machine"], data["methods"], rows, data["notes"], data["wall_time_s"])

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _parse_goal(text: str | None) -> Goal | None:
    if text is None:
        return None
    op, value = text.split()
    return Goal(op, float(value))


def format_value(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:.3f}{unit}"


def _met_text(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "-"}[met]


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| # | model | batch | setting | measured | value | goal | met | detail |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        goal = "-" if row.goal is None else str(row.goal)
        lines.append(
            f"| {row.section} | {row.model} | {row.batch} | {row.setting} | {row.metric} | "
            f"{format_value(row.value, row.unit)} | {goal} | {_met_text(row.met)} | {row.detail} |"
        )
    return "\n".join(lines)


SECTION_TITLES = {
    1: "explain vs the same model's logits-only forward",
    2: "explain vs the explicit approach of the official code (all N x N attention matrices kept and stacked)",
    3: "explain (all classes, one pass) vs pytorch-grad-cam GradCAM (reshape_transform route, blocks[-1].norm1)",
    4: "one TS-CAM training step vs one step of the plain timm classifier of the same backbone",
    5: "full evaluation vs forward-only throughput",
    6: "the demo: control update (no forward) and upload latency",
    7: "every localization method of tscam_core.methods (maps of one class per image) vs explain (all classes)",
}

#: What lies behind a missed goal and what would close it, by metric; printed for every missed one.
REMEDIES = {
    "explain / logits-only time":
        "explain adds one forward hook per block (on attn.qkv) and one small product per block, q_cls k^T "
        "(B x H x N), then one softmax and head mean for all blocks: a fixed cost of a few tensor calls per "
        "block, tens of microseconds each, so a few percent of a small model's forward and less of a DeiT-S one. "
        "The row's detail gives, beside the ratio, the floor of any hook-based capture (no-op hooks alone): where "
        "that floor is near 1.00 and the ratio misses the goal by about a percent, the run-to-run noise of a "
        "shared CPU decides the row (rerun on an idle machine). Closing it for good needs the capture without "
        "Python hooks: an attention kernel that returns the class-token row, or torch.compile of the explain pass.",
    "explain / logits-only peak memory":
        "explain keeps only B x L x N class-token scores and S_c; q and k are read in place from each block's "
        "qkv output, so any excess is the scores themselves (L x B x H x N floats).",
    "explicit / explain time":
        "with few tokens the N x N matrices are cheap and unfused attention is about as fast as the fused kernel; "
        "the gap opens as N grows (see the larger-input row).",
    "explicit/explain time: larger input / smaller":
        "the explicit approach's extra cost grows with N^2; at few tokens it is within noise: more repetitions.",
    "TS-CAM step / plain timm classifier step":
        "the 3x3 conv head runs over every patch token (9 x D x C multiply-adds per token) where the plain head is "
        "one linear layer on the class token; with many classes that is a few percent of the step, close to the "
        "goal, so the run-to-run noise of a shared CPU decides the row (rerun on an idle machine). bf16 autocast "
        "and channels-last on GPU, or torch.compile, would close it.",
    "full evaluation / forward-only images/s":
        "the per-image work the results folder needs costs about as much CPU as a small model's forward: "
        "decoding, the MaxBoxAccV2 sweep (every contour's box at 100 CAM thresholds, one union-find pass per map), "
        "a box per map variant and per layer count, PxAP histograms against a mask read from disk and a PNG "
        "thumbnail for every failure. The detail gives both CPU costs per image and the ceiling they allow with "
        "every usable core busy all the time: where that ceiling is under the goal, no scheduling can meet it; "
        "near it, the run's start (the first batch decoded before the model can start) and end (the last batch "
        "scored after it stops, the folder written) decide. What closes it: more cores (from 8 on, the default "
        "pool is forked processes, which scale where threads stop: docs/scoring-pools.md), a larger model (its "
        "forward outweighs the fixed per-image work), fewer success thumbnails (--thumbnails 0); rerun on an "
        "idle machine where the ceiling is above the goal. On a GPU the forward leaves the CPU but decoding and "
        "scoring do not: the detail's CPU per image beyond the forward is the cores a machine keeps busy per "
        "1000 images/s, more than a 16-core host has for a small ViT on a fast GPU (docs/scoring-pools.md); "
        "there the rate is the host's, until decoding and the sweep run on the GPU.",
    "threshold change (no forward)":
        "the box is found on the map upsampled to the input size and the main overlay is redrawn at display size; "
        "cache the upsampled map per (class, layers, variant) so that only the contour search and the blend remain.",
    "other control change (no forward)":
        "every such change redraws the main overlay and the three A*/S_c/M_c overlays at display size (see the "
        "parts in the detail column); cache the upsampled maps per (class, layers) and only re-blend, or draw the "
        "A*/S_c/M_c panel only when it is shown.",
    "upload (decode, explain, every view)":
        "the forward dominates: torch.compile, bf16 on GPU, or a smaller model.",
}


def markdown_page(report: Report) -> str:
    """docs/performance.md: the command, the machine, the table, how it was measured, missed goals."""
    machine = report.machine
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items() if version)
    lines = [
        "# Performance",
        "",
        "Written by `benchmarks/run.py`; do not edit by hand. Every figure is a ratio (or latency) measured side",
        "by side in one run, since absolute times drift on shared machines. Produced by:",
        "",
        "```",
        report.command,
        "```",
        "",
        f"Machine: {machine['cpu']}, {machine['cpu_cores_usable']} usable of {machine['cpu_cores']} cores, "
        f"{machine['torch_threads']} torch threads, device `{machine['device']}`"
        + (f" ({machine['gpu']})" if machine.get("gpu") else "")
        + f"; load average {machine['load_average_1min']} at the start, {machine.get('load_average_1min_end')} "
        f"at the end; {versions}; Python {machine['python']}. "
        f"Wall time of the run: {report.wall_time_s:.0f} s.",
        "",
        "## Sections",
        "",
    ]
    lines += [f"{number}. {title}" for number, title in SECTION_TITLES.items()]
    lines += ["", "## Results", "", markdown_table(report.rows), ""]
    lines += ["## How it is measured", ""]
    lines += [f"- {name}: {text}" for name, text in report.methods.items()]
    missed = list(dict.fromkeys(row.metric for row in report.rows if row.met is False))
    if missed:
        lines += ["", "## Missed goals: why, and what would close them", ""]
        lines += [f"- {metric}: {REMEDIES.get(metric, 'see the detail column.')}" for metric in missed]
    if report.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"
