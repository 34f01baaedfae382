"""The dashboard's data shaping, free of any UI package so it is tested and timed on its own.

Every function takes what ``results.load_results`` gives (a typed ``Summary``, a per-image
DataFrame, thumbnail files) and returns plain pandas or PIL objects; the Streamlit pages only lay
them out. Metric, curve, criterion and error-type names come from the catalogues of
``tscam_core.summary``, never spelled here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .errors import ImageError
from .explanation import VARIANTS, MapSpec, as_mode_and_count
from .images import load_image
from .overlay import GT_COLOR, PRED_COLOR, DrawnBox
from .results import THUMBNAIL_DIR
from .summary import ERROR_LABELS, ERROR_TYPES, METRICS, Metric, Summary

#: Larger than any thumbnail the evaluation draws (longest side 128 px): a bigger file is not decoded.
THUMBNAIL_MAX_PIXELS = 1024 * 1024
#: What stands in for a thumbnail that cannot be decoded: the evaluation's thumbnail size, plain gray.
PLACEHOLDER_SIDE = 128
PLACEHOLDER_COLOR = (200, 200, 200)


def metrics_table(summaries: Mapping[str, Summary]) -> pd.DataFrame:
    """Metrics (rows) of each run (columns), in percent; a metric a run lacks is NaN."""
    data = {name: [summary.metrics.value(metric) for metric in METRICS] for name, summary in summaries.items()}
    table = pd.DataFrame(data, index=[metric.label for metric in METRICS], dtype=float) * 100.0
    table.index.name = "metric"
    return table


def curve_frame(summaries: Mapping[str, Summary], curve: str) -> pd.DataFrame:
    """A long table (run, method, x, criterion, accuracy %) of one curve of every run that has it."""
    rows = []
    for name, summary in summaries.items():
        data = summary.metrics.curves.get(curve)
        if data is None:
            continue
        for criterion in ("gt_known", "top1"):
            for x, y in zip(data.x, data.series.get(criterion, ()), strict=False):
                if y is None:  # no image to measure it on (a run of no images)
                    continue
                rows.append({"run": name, "method": summary.settings.method.name, "x": x, "criterion": criterion,
                             "accuracy": 100.0 * y})
    return pd.DataFrame(rows, columns=["run", "method", "x", "criterion", "accuracy"])


#: What the method comparison puts side by side: the paper's two accuracies and Choe et al.'s two measures.
COMPARED_METRICS: tuple[Metric, ...] = tuple(
    metric for metric in METRICS if metric.path in ("top1_loc", "gt_known_loc", "maxboxacc_v2.mean", "pxap"))


def method_table(summaries: Mapping[str, Summary]) -> pd.DataFrame:
    """One row per run (the index), runs of one method together in the order the methods first come:
    its method, what that costs, the split and CAM threshold it was scored at, and the
    ``COMPARED_METRICS`` in percent (NaN where the run has none: PxAP without masks)."""
    labels = [metric.label for metric in COMPARED_METRICS]
    rows = [{"run": name, "method": summary.settings.method.name, "label": summary.settings.method.label,
             "cost": summary.settings.method.cost, "dataset": f"{summary.dataset.kind} / {summary.dataset.split}",
             "CAM threshold": summary.settings.cam_threshold,
             **{metric.label: summary.metrics.value(metric) for metric in COMPARED_METRICS}}
            for name, summary in summaries.items()]
    table = pd.DataFrame(rows, columns=["run", "method", "label", "cost", "dataset", "CAM threshold", *labels])
    table[labels] = table[labels].astype(float) * 100.0
    first = {method: i for i, method in enumerate(dict.fromkeys(table["method"]))}
    return table.sort_values("method", key=lambda column: column.map(first), kind="stable").set_index("run")


def method_bars(table: pd.DataFrame) -> pd.DataFrame:
    """A ``method_table`` as (run, method, metric, percent) rows, one per bar, in the table's order;
    a metric a run lacks has no row."""
    labels = [metric.label for metric in COMPARED_METRICS]
    bars = table.reset_index().melt(id_vars=["run", "method"], value_vars=labels, var_name="metric",
                                    value_name="percent")
    return bars.dropna(subset=["percent"]).reset_index(drop=True)


def variants_frame(summaries: Mapping[str, Summary]) -> pd.DataFrame:
    """Table 5: (run, variant, criterion, accuracy %) for TS-CAM and its two ablations."""
    rows = []
    for name, summary in summaries.items():
        for variant, values in summary.metrics.variants.items():
            for criterion, value in values.items():
                if value is not None:
                    rows.append({"run": name, "variant": variant, "criterion": criterion, "accuracy": 100.0 * value})
    return pd.DataFrame(rows, columns=["run", "variant", "criterion", "accuracy"])


def error_frame(summaries: Mapping[str, Summary]) -> pd.DataFrame:
    """Table 7: (run, error_type, percent) of the images in each error category."""
    rows = []
    for name, summary in summaries.items():
        errors = summary.metrics.error_analysis
        for kind in ERROR_TYPES:
            if errors.get(kind) is not None:
                rows.append({"run": name, "error_type": ERROR_LABELS[kind], "percent": 100.0 * errors[kind]})
    return pd.DataFrame(rows, columns=["run", "error_type", "percent"])


def per_class_frame(summary: Summary) -> pd.DataFrame:
    """Per-class GT-known localization and top-1 classification (%), worst localized first; classes
    the run has no image of (a --limit run, a split without them) are left out, not shown as 0%."""
    data = summary.metrics.per_class
    frame = pd.DataFrame({
        "class_name": list(data.class_names) if data else [],
        "gt_known": 100.0 * np.asarray(data.gt_known if data else [], dtype=float),
        "top1_cls": 100.0 * np.asarray(data.top1_cls if data else [], dtype=float),
        "count": np.asarray(data.count if data else [], dtype=int),
    })
    frame = frame[frame["count"] > 0]
    return frame.sort_values(["gt_known", "class_name"], kind="stable").reset_index(drop=True)


def scored_map(spec: MapSpec | None, depth: int) -> MapSpec:
    """The map the run scored, so that the detail view first shows that one. Blocks its controls cannot
    show (a gap between blocks) or that do not fit the model start at every block; a variant the
    explorer does not draw (a CNN's CAM) and a run of a method that is no map of the explanation
    (None: rollout, a gradient method) at TS-CAM."""
    if spec is None:
        return MapSpec()
    if spec.variant not in VARIANTS:
        spec = MapSpec("tscam", spec.blocks, spec.signed)
    try:
        if as_mode_and_count(spec.blocks, depth) is not None:
            return spec
    except ValueError:  # blocks the model does not have
        pass
    return MapSpec(spec.variant, "all", spec.signed)


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


def metric_deltas(first: Summary, second: Summary) -> pd.DataFrame:
    """Each metric of two runs and the second minus the first, in points."""
    table = metrics_table({"first": first, "second": second})
    table["delta"] = table["second"] - table["first"]
    return table


def thumbnail_boxes(row: Mapping) -> list[DrawnBox]:
    """The GT boxes in green and the top-1 prediction in red, as every picture of a result draws them."""
    boxes = [DrawnBox(box, GT_COLOR) for box in row["gt_boxes"]]
    return [*boxes, DrawnBox(row["pred_box"], PRED_COLOR)]


def identity_table(summaries: Mapping[str, Summary]) -> pd.DataFrame:
    """What each run evaluated and how: the rows that make two runs' numbers comparable or not."""
    rows = {}
    for name, summary in summaries.items():
        checkpoint, dataset, settings = summary.checkpoint, summary.dataset, summary.settings
        rows[name] = {
            "checkpoint": checkpoint.source, "architecture": checkpoint.arch,
            "classes": checkpoint.num_classes, "dataset": f"{dataset.kind} / {dataset.split}",
            "images": dataset.num_images, "CAM threshold": settings.cam_threshold,
            "method": settings.method.label, "cost": settings.method.cost,
            "images / s": summary.images_per_second, "created": summary.created,
        }
    return pd.DataFrame(rows).astype(str)


def thumbnail_file(run_folder: Path, stored: object) -> Path | None:
    """The file a row's ``thumbnail`` column names, if it is a plain file name that exists in the run's
    thumbnails/ (a name with a folder in it, as a damaged or hostile table may hold, names none)."""
    if not isinstance(stored, str) or not stored or Path(stored).name != stored or stored in (".", ".."):
        return None
    path = run_folder / THUMBNAIL_DIR / stored
    return path if path.is_file() else None


def read_thumbnail(path: Path) -> tuple[Image.Image, str | None]:
    """The thumbnail decoded, or the gray placeholder and the one-line reason, so that one damaged file
    costs its own picture and not the page."""
    try:
        return load_image(path, max_pixels=THUMBNAIL_MAX_PIXELS), None
    except (ImageError, OSError):
        return Image.new("RGB", (PLACEHOLDER_SIDE, PLACEHOLDER_SIDE), PLACEHOLDER_COLOR), f"thumbnail {path.name} is damaged or not an image"
