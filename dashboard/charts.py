"""Plotly figures of the frames ``tscam_core.dashboard_data`` shapes; no numbers are computed here."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from tscam_core import dashboard_data as data
from tscam_core.summary import Summary

_CRITERION_NAMES = {"gt_known": "GT-known", "top1": "Top-1", "top5": "Top-5"}
_X_TITLES = {
    "loc_vs_iou": "IoU threshold",
    "loc_vs_cam_threshold": "CAM threshold",
    "layer_count": "blocks averaged into A* (first k)",
}


def _empty(title: str) -> go.Figure:
    figure = go.Figure()
    figure.update_layout(title=f"{title}: not in these runs", xaxis_visible=False, yaxis_visible=False)
    return figure


def curve_chart(frame: pd.DataFrame, curve: str, title: str) -> go.Figure:
    """Accuracy against one setting, a line per run and criterion (Fig. 7, Table 12)."""
    if frame.empty:
        return _empty(title)
    frame = frame.assign(criterion=frame["criterion"].map(_CRITERION_NAMES))
    figure = px.line(frame, x="x", y="accuracy", color="run", line_dash="criterion", markers=True, title=title,
                     labels={"x": _X_TITLES[curve], "accuracy": "localization accuracy (%)"})
    return figure.update_yaxes(rangemode="tozero")


def variants_chart(frame: pd.DataFrame) -> go.Figure:
    """Table 5: each map variant's accuracy, grouped by criterion."""
    title = "Map variants (Table 5)"
    if frame.empty:
        return _empty(title)
    frame = frame.assign(criterion=frame["criterion"].map(lambda c: _CRITERION_NAMES.get(c.removesuffix("_loc"), c)))
    return px.bar(frame, x="variant", y="accuracy", color="criterion", facet_col="run", barmode="group", title=title,
                  labels={"accuracy": "accuracy (%)"})


def error_chart(frame: pd.DataFrame) -> go.Figure:
    """Table 7: the share of images in each error category."""
    title = "Error types (Table 7)"
    if frame.empty:
        return _empty(title)
    return px.bar(frame, x="error_type", y="percent", color="run", barmode="group", title=title,
                  labels={"error_type": "", "percent": "images (%)"})


def per_class_chart(frame: pd.DataFrame, run: str) -> go.Figure:
    """Per-class GT-known localization, worst first, with the class's classification accuracy on hover."""
    title = f"Per-class GT-known localization, worst first ({run})"
    if frame.empty:
        return _empty(title)
    return px.bar(frame, x="class_name", y="gt_known", hover_data=["top1_cls", "count"], title=title,
                  labels={"class_name": "", "gt_known": "GT-known Loc (%)", "top1_cls": "Top-1 Cls (%)"})


def delta_chart(frame: pd.DataFrame, first: str, second: str) -> go.Figure:
    """Second run minus first, per metric, in points."""
    frame = frame.dropna(subset=["delta"]).reset_index()
    title = f"{second} minus {first} (points)"
    if frame.empty:
        return _empty(title)
    colors = ["gain" if d >= 0 else "loss" for d in frame["delta"]]
    return px.bar(frame, x="metric", y="delta", color=colors, title=title,
                  color_discrete_map={"gain": "#2a9d8f", "loss": "#e76f51"}, labels={"metric": "", "delta": "points"})


def method_metrics_chart(bars: pd.DataFrame) -> go.Figure:
    """The compared metrics of each run, a panel per metric, the bars coloured by method."""
    title = "Methods side by side (%)"
    if bars.empty:
        return _empty(title)
    figure = px.bar(bars, x="run", y="percent", color="method", facet_col="metric", title=title,
                    category_orders={"run": list(dict.fromkeys(bars["run"]))}, labels={"run": "", "percent": "%"})
    return figure.for_each_annotation(lambda note: note.update(text=note.text.split("=", 1)[-1]))


def method_curve_chart(frame: pd.DataFrame) -> go.Figure:
    """Accuracy against the CAM threshold, a line per run and criterion, coloured by method."""
    title = "Localization vs CAM threshold, by method"
    if frame.empty:
        return _empty(title)
    frame = frame.assign(criterion=frame["criterion"].map(_CRITERION_NAMES))
    figure = px.line(frame, x="x", y="accuracy", color="method", line_dash="criterion", line_group="run",
                     hover_name="run", markers=True, title=title,
                     labels={"x": _X_TITLES["loc_vs_cam_threshold"], "accuracy": "localization accuracy (%)"})
    return figure.update_yaxes(rangemode="tozero")


@st.cache_data(show_spinner=False, max_entries=32)
def method_figures(summaries: dict[str, Summary]) -> dict[str, go.Figure]:
    """The method comparison's charts, cached on the summaries."""
    return {"chart_method_metrics": method_metrics_chart(data.method_bars(data.method_table(summaries))),
            "chart_method_cam": method_curve_chart(data.curve_frame(summaries, "loc_vs_cam_threshold"))}


@st.cache_data(show_spinner=False, max_entries=32)
def overview_figures(summaries: dict[str, Summary]) -> dict[str, go.Figure]:
    """Every overview chart, cached on the summaries: building plotly figures costs ~0.2 s each."""
    figures = {
        "chart_iou": curve_chart(data.curve_frame(summaries, "loc_vs_iou"), "loc_vs_iou",
                                 "Localization vs IoU threshold (Fig. 7)"),
        "chart_cam": curve_chart(data.curve_frame(summaries, "loc_vs_cam_threshold"), "loc_vs_cam_threshold",
                                 "Localization vs CAM threshold"),
        "chart_layers": curve_chart(data.curve_frame(summaries, "layer_count"), "layer_count",
                                    "Localization vs layers in A* (Table 12)"),
        "chart_errors": error_chart(data.error_frame(summaries)),
        "chart_variants": variants_chart(data.variants_frame(summaries)),
    }
    for name, summary in summaries.items():
        figures[f"per_class:{name}"] = per_class_chart(data.per_class_frame(summary), name)
    return figures
