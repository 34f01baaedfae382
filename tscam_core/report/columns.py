"""The per-image 0/1 column behind each figure of a results folder, and its bootstrap interval.

Every accuracy of a run is the mean of a column of per_image.parquet, or of one derived from its
columns (Top-5 Cls: the GT class among the top five; the accuracy at IoU t: ``gt_known_iou``
against t, as the summary's curve counts it). Columns are Series indexed by image id, so two runs
of the same images pair image by image whatever their row order. MaxBoxAccV2 and PxAP have no
column: the table keeps neither an image's best IoU at the chosen threshold nor its pixels.
"""

from __future__ import annotations

import pandas as pd

from ..intervals import Interval, bootstrap_interval, difference_interval
from ..results import Results

#: The summary's main metrics and the per-image column each one is the mean of (Top-5 Cls is derived).
METRIC_COLUMNS = {"top1_cls": "correct_cls", "top1_loc": "top1_loc", "top5_loc": "top5_loc",
                  "gt_known_loc": "gt_known"}


def indexed(results: Results, values: pd.Series) -> pd.Series:
    return pd.Series(values.to_numpy(dtype=float), index=results.per_image["image_id"].astype(str).to_numpy())


def column_hits(results: Results, column: str) -> pd.Series:
    """A boolean column of the table (``gt_known``, ``gt_known_trans_cam``, ``gt_known_layers_3``) as 0/1."""
    if column not in results.per_image.columns:
        raise ValueError(f"{results.path}: per_image.parquet has no column {column!r}")
    return indexed(results, results.per_image[column])


def metric_hits(results: Results, path: str) -> pd.Series | None:
    """The column whose mean is the summary's metric ``path``; None for a metric without one (MaxBoxAccV2, PxAP)."""
    if path == "top5_cls":
        table = results.per_image
        return indexed(results, pd.Series([int(gt) in set(top5) for gt, top5 in
                                           zip(table["gt_class"], table["top5_classes"], strict=True)]))
    return column_hits(results, METRIC_COLUMNS[path]) if path in METRIC_COLUMNS else None


def error_hits(results: Results, kind: str) -> pd.Series:
    """1 where Algorithm 1 gives the image the verdict ``kind`` ("correct", "cls", "part", ...)."""
    return indexed(results, results.per_image["error_type"] == kind)


def iou_hits(results: Results, iou: float) -> tuple[pd.Series, pd.Series]:
    """GT-known (IoU >= ``iou``) and Top-1 (right class and IoU > ``iou``) localization at another IoU
    threshold, from the GT-class box's IoU: the tests of the summary's ``loc_vs_iou`` curve."""
    table = results.per_image
    return (indexed(results, table["gt_known_iou"] >= iou),
            indexed(results, table["correct_cls"].astype(bool) & (table["gt_known_iou"] > iou)))


def interval(hits: pd.Series | None) -> Interval | None:
    """The 95% bootstrap interval of the column's mean (2,000 resamples, seed 0); None without a column."""
    return None if hits is None else bootstrap_interval(hits.to_numpy())


def paired(first: pd.Series, second: pd.Series) -> Interval:
    """mean(first) - mean(second) over the same images, from the per-image difference (the paired interval)."""
    if len(first) != len(second) or set(first.index) != set(second.index):
        raise ValueError(f"the two runs scored different images ({len(first)} and {len(second)}, "
                         f"{len(set(first.index) ^ set(second.index))} not in both): a paired difference needs "
                         "the same dataset, split and --limit")
    return bootstrap_interval((first - second.reindex(first.index)).to_numpy())


def unpaired(first: pd.Series, second: pd.Series) -> Interval:
    """mean(first) - mean(second) for runs of different images (another draw of the benchmark)."""
    return difference_interval(first.to_numpy(), second.to_numpy())
