"""What moved with the reference conventions (issue #18): the main run scored again under the conventions
tscam used before (half-open box pixels, a 0.01 threshold step) beside the run under the reference
codes' (the defaults), figure by figure, the per-image ones with the paired interval of their change."""

from __future__ import annotations

import shlex

from ..results import Results
from ..summary import ERROR_LABELS, FAILURE_TYPES, METRICS
from .columns import column_hits, error_hits, interval, metric_hits, paired
from .markdown import cell, pct, row, rule

#: The evaluation options that give tscam's earlier conventions back (tscam_core/overlaps.py, metrics.py).
PREVIOUS_CONVENTIONS = {"box_convention": "half_open", "cam_curve_interval": 0.01}
#: What else changed in the same move (commit "Score localization with the reference codes' conventions")
#: that no evaluation option gives back, so that no run measures it.
NOT_AN_OPTION = ("Top-1 and Top-5 Loc at IoU >= 0.5 (now IoU > 0.5, as the official code)",
                 "Part and More judged on maxima over all GT boxes, More at IoG > 0.7 (now on the GT box of "
                 "highest IoU, More at IoG >= 0.7)",
                 "the MaxBoxAccV2 / PxAP threshold grid rounded (now np.arange's raw values)",
                 "no MaxBoxAccV2 box at a threshold that keeps no pixel (now [0, 0, 0, 0], as Choe et al.)")


def conventions_table(reference: Results, previous: Results, commands: list[list[str]]) -> list[str]:
    """The section, from the run under the defaults and the run under ``PREVIOUS_CONVENTIONS``, made by
    ``commands`` (in that order)."""
    lines = ["## What the reference conventions moved (issue #18)", "",
             "The main run scored again under the conventions tscam used before adopting the reference codes' "
             "(box pixels counted half-open, MaxBoxAccV2 / PxAP threshold step 0.01), at the same CAM threshold "
             "on the same images:", "",
             row("figure", "reference conventions (default)", "previous tscam conventions",
                 "difference (reference - previous)"), rule(4)]
    for metric in METRICS:
        now, before = metric_hits(reference, metric.path), metric_hits(previous, metric.path)
        if now is not None:
            lines.append(row(metric.label, cell(interval(now)), cell(interval(before)), cell(paired(now, before))))
        else:
            value, old = reference.parsed.metrics.value(metric), previous.parsed.metrics.value(metric)
            change = None if value is None or old is None else value - old
            lines.append(row(metric.label, pct(value), pct(old), "-" if change is None else f"{100 * change:.1f}"))
    for kind in FAILURE_TYPES:
        now, before = error_hits(reference, kind), error_hits(previous, kind)
        lines.append(row(f"Algorithm 1: {ERROR_LABELS[kind]}", cell(interval(now), 2), cell(interval(before), 2),
                         cell(paired(now, before), 2)))
    moved = int((column_hits(reference, "gt_known") != column_hits(previous, "gt_known")).sum())
    return lines + [
        "", f"{moved} of {len(reference.per_image)} images change their GT-known verdict. MaxBoxAccV2 and PxAP change without an interval "
        "(no per-image column). The same move changed what no evaluation option gives back, so these runs do "
        "not measure it: " + "; ".join(NOT_AN_OPTION) + ". The two runs:", "", "```",
        *map(shlex.join, commands), "```"]
