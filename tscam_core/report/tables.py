"""The paper's tables that one evaluation run fills, each figure with its 95% bootstrap interval where
the per-image table holds the column it is the mean of (``columns``); the others say why they have none."""

from __future__ import annotations

import os
from pathlib import Path

from ..evaluate.summary import layer_name
from ..results import Results
from ..summary import FAILURE_TYPES, METRICS, Metric
from .columns import column_hits, error_hits, interval, iou_hits, metric_hits
from .markdown import cell, paper, pct, row, rule

#: The paper's CUB-200-2011 figures (Tables 1/8, 12, 7), in percent; None where the paper has none.
PAPER_MAIN = {"top1_cls": 80.3, "top5_cls": 94.8, "top1_loc": 71.3, "top5_loc": 83.8, "gt_known_loc": 87.7}
PAPER_TABLE12 = {8: (65.2, 75.8, 79.0), 9: (68.5, 80.0, 83.6), 10: (70.2, 81.2, 85.5), 11: (71.2, 83.7, 87.7),
                 12: (71.3, 83.8, 87.7)}
PAPER_TABLE7 = {  # Cls, M-Ins, Part, More, OT
    "VGG16 (CAM)": (23.28, None, 21.91, 10.53, 1.76),
    "InceptionV3 (CAM)": (26.39, None, 23.09, 5.52, 0.64),
    "TS-CAM (Deit-S)": (19.66, None, 6.30, 2.85, 0.01),
}
#: How the page states the intervals, once, under its header.
INTERVALS_NOTE = ("Figures in the form `38.1 [36.0, 40.2]` give the 95% percentile-bootstrap interval over the "
                  "images (2,000 resamples, seed 0; tscam_core/intervals.py), from the per-image column of "
                  "per_image.parquet that the figure is the mean of. A difference of two maps on the same images "
                  "is bootstrapped from the per-image difference (paired), one of two draws of the benchmark from "
                  "each draw resampled on its own.")


def main_table(results: Results) -> list[str]:
    measured = results.parsed.metrics
    lines = ["## Classification and localization (paper Table 1 / Table 8)", "",
             row("metric", "measured", "paper (CUB, TS-CAM)"), rule(3)]
    for metric in METRICS:
        if metric.path in PAPER_MAIN:
            hits = metric_hits(results, metric.path)
            shown = cell(interval(hits)) if hits is not None else pct(measured.value(metric))
            lines.append(row(metric.label, shown, paper(PAPER_MAIN[metric.path])))
    return lines


def layer_table(results: Results) -> list[str]:
    layers = results.metrics["layer_count"]
    counts = layers["counts"]
    lines = ["## Layer count (paper Table 12): TS-CAM with A* averaged over the first k blocks", "",
             row("k", "Top-1 Loc", "Top-5 Loc", "GT-known Loc", "paper Top-1", "paper Top-5", "paper GT-known"),
             rule(7)]
    for i, k in enumerate(counts):
        top5 = layers.get("top5", [None] * len(counts))[i]
        gt_known = cell(interval(column_hits(results, f"gt_known_{layer_name(k)}")))
        lines.append(row(k, pct(layers["top1"][i]), pct(top5), gt_known, *map(paper, PAPER_TABLE12.get(k, (None,) * 3))))
    return lines + ["", f"The paper's rows are for k = 8..12 of Deit-S's 12 blocks; this model has {len(counts)}. "
                    "Only GT-known Loc has a per-image column for each k (`gt_known_layers_k`): Top-1 and Top-5 Loc "
                    "of a layer count are counted by the evaluation but not kept per image, so they have no interval."]


def iou_table(results: Results, figure: Path, doc: Path) -> list[str]:
    lines = ["## Accuracy vs IoU threshold (paper Fig. 7)", "",
             f"![Localization accuracy vs IoU threshold]({os.path.relpath(figure, doc.parent)})", "",
             row("IoU threshold", "GT-known Loc", "Top-1 Loc"), rule(3)]
    for iou in results.metrics["loc_vs_iou"]["iou_thresholds"]:
        gt_known, top1 = iou_hits(results, iou)
        lines.append(row(f"{iou:g}", cell(interval(gt_known)), cell(interval(top1))))
    return lines + ["", "Each image's GT-known IoU, against each IoU threshold (GT-known at IoU >= it, Top-1 with "
                    "the right class at IoU > it), gives both rows. The paper shows this curve for CUB only as a "
                    "figure (TS-CAM above CAM and RCAM at every IoU, with the gap growing at stricter IoU); it gives "
                    "no numbers to copy."]


def error_table(results: Results, cnn: Results | None = None) -> list[str]:
    lines = ["## Error analysis (paper Table 7, Algorithm 1)", "",
             row("method", "Cls", "M-Ins", "Part", "More", "OT", "correct (Top-1 Loc)"), rule(7)]
    measured = [("measured (TS-CAM)", results)]
    if cnn is not None:
        measured.append((f"measured (CAM, {cnn.summary['checkpoint']['arch']})", cnn))
    for label, run in measured:
        lines.append(row(label, *(cell(interval(error_hits(run, kind)), 2) for kind in FAILURE_TYPES),
                         cell(interval(column_hits(run, "top1_loc")), 2)))
    lines += [row(f"paper: {label}", *map(paper, ref), "") for label, ref in PAPER_TABLE7.items()]
    return lines + ["", "M-Ins: the box touches two or more GT boxes with IoG > 0.3; the paper has no M-Ins on CUB "
                    "(one bird per image). Part: IoP > 0.5. More: IoG >= 0.7. Part and More are judged on the GT box "
                    "of highest IoU, as the official code's get_badcase_detail (lib/cams_deit.py). The types are "
                    "exclusive, tested in this order; each share's interval comes from the per-image `error_type`."]


def choe_row(metric: Metric, value: float | None, thresholds: dict[str, float]) -> str:
    """A row of the stricter metrics' table: the value, and the best CAM threshold where the metric has one."""
    best = thresholds.get(metric.path.rpartition(".")[2])
    shown = pct(value) if value is not None or metric.path != "pxap" else "no masks"
    return row(metric.label, shown, "" if best is None else f"{best:g}")


def choe_table(results: Results) -> list[str]:
    measured, step = results.parsed.metrics, results.summary["settings"].get("cam_curve_interval")
    thresholds = results.metrics["maxboxacc_v2"]["best_cam_threshold"]
    return ["## The stricter metrics of Choe et al. (CVPR 2020)", "",
            row("metric", "measured", "best CAM threshold"), rule(3),
            *(choe_row(metric, measured.value(metric), thresholds) for metric in METRICS
              if metric.path not in PAPER_MAIN), "",
            "The TS-CAM paper reports neither metric. MaxBoxAccV2 sweeps the CAM threshold "
            f"(np.arange(0, 1, {step})), takes the box of every contour (holes' borders included, x1 and y1 clipped "
            "to the last column and row, [0, 0, 0, 0] where no pixel survives, as in their reference code, "
            "wsolevaluation's evaluation.py) and the best one per image, and keeps the best threshold for each IoU "
            "(IoU >= 0.3 / 0.5 / 0.7); PxAP is the average precision of the map's pixels against the object masks, "
            "over the same thresholds.", "",
            "Neither has an interval. MaxBoxAccV2 at its chosen threshold is a per-image hit, but the evaluation "
            "keeps only each threshold's count of hits, not which images hit (per_image.parquet has no column of "
            "it); PxAP is a precision over all images' pixels pooled, not a mean over images."]


def cam_threshold_table(results: Results) -> list[str]:
    curve = results.metrics["loc_vs_cam_threshold"]
    return ["## Accuracy vs CAM threshold (official largest-contour box)", "",
            row("CAM threshold", *(f"{t:g}" for t in curve["cam_thresholds"])),
            rule(len(curve["cam_thresholds"]) + 1),
            row("GT-known Loc", *map(pct, curve["gt_known"])),
            row("Top-1 Loc", *map(pct, curve["top1"])), "",
            "Without intervals: the table keeps each image's box at the run's own CAM threshold only."]
