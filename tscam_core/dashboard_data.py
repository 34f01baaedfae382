"""The dashboard's data shaping, free of any UI package so it is tested and timed on its own.

Every function takes what ``results.load_results`` gives (a summary dict, a per-image
DataFrame) and returns plain pandas or PIL objects; the Streamlit pages only lay them out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .explanation import VARIANTS, MapSpec, as_mode_and_count
from .overlay import GT_COLOR, PRED_COLOR, DrawnBox

#: Error types of Algorithm 1, in the order of the paper's Table 7.
ERROR_TYPES: tuple[str, ...] = ("correct", "cls", "m_ins", "part", "more", "ot")
ERROR_LABELS: dict[str, str] = {
    "correct": "Correct", "cls": "Classification", "m_ins": "Multi-instance",
    "part": "Part", "more": "More", "ot": "Others",
}
#: The localization criteria a run can be compared on (per-image boolean columns).
CRITERIA: dict[str, str] = {"top1_loc": "Top-1 Loc", "gt_known": "GT-known Loc", "top5_loc": "Top-5 Loc"}

#: (label, path into summary["metrics"]) for the side-by-side table.
METRIC_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Top-1 Cls", ("top1_cls",)),
    ("Top-5 Cls", ("top5_cls",)),
    ("Top-1 Loc", ("top1_loc",)),
    ("Top-5 Loc", ("top5_loc",)),
    ("GT-known Loc", ("gt_known_loc",)),
    ("MaxBoxAccV2 IoU 0.3", ("maxboxacc_v2", "iou_30")),
    ("MaxBoxAccV2 IoU 0.5", ("maxboxacc_v2", "iou_50")),
    ("MaxBoxAccV2 IoU 0.7", ("maxboxacc_v2", "iou_70")),
    ("MaxBoxAccV2 mean", ("maxboxacc_v2", "mean")),
    ("PxAP", ("pxap",)),
)

#: summary["metrics"] keys of the curves, and the name of their x axis.
CURVES: dict[str, str] = {
    "loc_vs_iou": "iou_thresholds",
    "loc_vs_cam_threshold": "cam_thresholds",
    "layer_count": "counts",
}


def _lookup(metrics: Mapping, path: Sequence[str]) -> float | None:
    value: object = metrics
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return None if value is None else float(value)


def metrics_table(summaries: Mapping[str, Mapping]) -> pd.DataFrame:
    """Metrics (rows) of each run (columns), in percent; a metric a run lacks is NaN."""
    data = {
        name: [_lookup(summary.get("metrics", {}), path) for _, path in METRIC_ROWS]
        for name, summary in summaries.items()
    }
    table = pd.DataFrame(data, index=[label for label, _ in METRIC_ROWS], dtype=float) * 100.0
    table.index.name = "metric"
    return table


def curve_frame(summaries: Mapping[str, Mapping], curve: str) -> pd.DataFrame:
    """A long table (run, x, criterion, accuracy %) of one curve of every run that has it."""
    x_key = CURVES[curve]
    rows = []
    for name, summary in summaries.items():
        data = summary.get("metrics", {}).get(curve)
        if not data:
            continue
        for criterion in ("gt_known", "top1"):
            for x, y in zip(data.get(x_key, []), data.get(criterion, []), strict=True):
                if y is None:  # no image to measure it on (a run of no images)
                    continue
                rows.append({"run": name, "x": float(x), "criterion": criterion, "accuracy": 100.0 * float(y)})
    return pd.DataFrame(rows, columns=["run", "x", "criterion", "accuracy"])


def variants_frame(summaries: Mapping[str, Mapping]) -> pd.DataFrame:
    """Table 5: (run, variant, criterion, accuracy %) for TS-CAM and its two ablations."""
    rows = []
    for name, summary in summaries.items():
        for variant, values in (summary.get("metrics", {}).get("variants") or {}).items():
            for criterion, value in values.items():
                if value is not None:
                    rows.append({"run": name, "variant": variant, "criterion": criterion,
                                 "accuracy": 100.0 * float(value)})
    return pd.DataFrame(rows, columns=["run", "variant", "criterion", "accuracy"])


def error_frame(summaries: Mapping[str, Mapping]) -> pd.DataFrame:
    """Table 7: (run, error_type, percent) of the images in each error category."""
    rows = []
    for name, summary in summaries.items():
        errors = summary.get("metrics", {}).get("error_analysis") or {}
        for kind in ERROR_TYPES:
            if kind in errors and errors[kind] is not None:
                rows.append({"run": name, "error_type": ERROR_LABELS[kind], "percent": 100.0 * float(errors[kind])})
    return pd.DataFrame(rows, columns=["run", "error_type", "percent"])


def per_class_frame(summary: Mapping) -> pd.DataFrame:
    """Per-class GT-known localization and top-1 classification (%), worst localized first; classes
    the run has no image of (a --limit run, a split without them) are left out, not shown as 0%."""
    data = summary.get("metrics", {}).get("per_class") or {}
    frame = pd.DataFrame({
        "class_name": list(data.get("class_names", [])),
        "gt_known": 100.0 * np.asarray(data.get("gt_known", []), dtype=float),
        "top1_cls": 100.0 * np.asarray(data.get("top1_cls", []), dtype=float),
        "count": np.asarray(data.get("count", []), dtype=int),
    })
    frame = frame[frame["count"] > 0]
    return frame.sort_values(["gt_known", "class_name"], kind="stable").reset_index(drop=True)


def scored_map(summary: Mapping, depth: int) -> MapSpec:
    """The map the run scored, so that the detail view first shows that one. Blocks its controls cannot
    show (a gap between blocks) or cannot read start at every block; a variant the explorer does not
    draw (a CNN's CAM, an unknown name) at TS-CAM."""
    settings = summary.get("settings", {})
    variant = settings.get("variant")
    variant = variant if variant in VARIANTS else "tscam"
    signed = settings.get("signed_class_maps") is True
    try:
        spec = MapSpec.from_record({**settings, "variant": variant, "signed_class_maps": signed})
        if as_mode_and_count(spec.blocks, depth) is not None:
            return spec
    except (TypeError, ValueError):
        pass
    return MapSpec(variant, "all", signed)


def prepare_images(per_image: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """The per-image table plus the columns the filters and captions need, computed once per run."""
    frame = per_image.copy()
    frame["confidence"] = np.fromiter((s[0] if len(s) else 0.0 for s in frame["top5_scores"]), float, len(frame))
    frame["pred_class"] = np.fromiter((c[0] if len(c) else -1 for c in frame["top5_classes"]), int, len(frame))
    names = np.asarray([*class_names, "?"], dtype=object)
    frame["gt_name"] = names[np.clip(frame["gt_class"].to_numpy(int), -1, len(class_names))]
    frame["pred_name"] = names[frame["pred_class"].to_numpy()]
    return frame


@dataclass(frozen=True)
class ImageFilter:
    """What the failure browser keeps; an empty selection keeps everything."""

    error_types: tuple[str, ...] = ()
    classes: tuple[int, ...] = ()
    iou_range: tuple[float, float] = (0.0, 1.0)
    confidence_range: tuple[float, float] = (0.0, 1.0)


def filter_images(frame: pd.DataFrame, chosen: ImageFilter) -> pd.DataFrame:
    """Rows of a ``prepare_images`` table that pass every part of the filter, in their stored order."""
    keep = frame["iou"].between(*chosen.iou_range) & frame["confidence"].between(*chosen.confidence_range)
    if chosen.error_types:
        keep &= frame["error_type"].isin(chosen.error_types)
    if chosen.classes:
        keep &= frame["gt_class"].isin(chosen.classes)
    return frame[keep]


def page_count(rows: int, per_page: int) -> int:
    return max(1, math.ceil(rows / per_page))


def page_rows(frame: pd.DataFrame, page: int, per_page: int) -> pd.DataFrame:
    """Rows of the 1-based ``page``; a page past the end gives the last one."""
    page = min(max(1, page), page_count(len(frame), per_page))
    return frame.iloc[(page - 1) * per_page: page * per_page]


def compare_runs(a: pd.DataFrame, b: pd.DataFrame, criterion: str) -> pd.DataFrame:
    """Images both runs evaluated, with whether each localized them (``criterion`` column), keyed by id."""
    for name, frame in (("first", a), ("second", b)):
        if criterion not in frame.columns:
            raise KeyError(f"the {name} run has no per-image column {criterion!r}")
    merged = a[["image_id", criterion, "iou", "error_type"]].merge(
        b[["image_id", criterion, "iou", "error_type"]], on="image_id", suffixes=("_a", "_b"))
    return merged.rename(columns={f"{criterion}_a": "localized_a", f"{criterion}_b": "localized_b"})


def metric_deltas(first: Mapping, second: Mapping) -> pd.DataFrame:
    """Each metric of two runs and the second minus the first, in points."""
    table = metrics_table({"first": first, "second": second})
    table["delta"] = table["second"] - table["first"]
    return table


def thumbnail_boxes(row: Mapping) -> list[DrawnBox]:
    """The GT boxes in green and the top-1 prediction in red, as every picture of a result draws them."""
    boxes = [DrawnBox(box, GT_COLOR) for box in row["gt_boxes"]]
    return [*boxes, DrawnBox(row["pred_box"], PRED_COLOR)]


def identity_table(summaries: Mapping[str, Mapping]) -> pd.DataFrame:
    """What each run evaluated and how: the rows that make two runs' numbers comparable or not."""
    rows = {}
    for name, summary in summaries.items():
        checkpoint, dataset, settings = (summary.get(k) or {} for k in ("checkpoint", "dataset", "settings"))
        rows[name] = {
            "checkpoint": checkpoint.get("source"), "architecture": checkpoint.get("arch"),
            "classes": checkpoint.get("num_classes"), "dataset": f"{dataset.get('kind')} / {dataset.get('split')}",
            "images": dataset.get("num_images"), "CAM threshold": settings.get("cam_threshold"),
            "layers": "all" if settings.get("layers") is None else str(settings.get("layers")),
            "variant": settings.get("variant"), "images / s": summary.get("images_per_second"),
            "created": summary.get("created"),
        }
    return pd.DataFrame(rows).astype(str)
