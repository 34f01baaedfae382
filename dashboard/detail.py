"""The failure browser's detail view: one image's maps recomputed live from the run's checkpoint.

The model runs once per image (cached); the threshold, layer and class controls only redraw
from the cached explanation, through the same ``tscam_core.explorer`` logic as the Gradio demo.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.runs import Run
from tscam_core import dashboard_data as data
from tscam_core.errors import TSCAMError
from tscam_core.examples import GroundTruth
from tscam_core.explanation import LAYER_MODES, as_mode_and_count, blocks_of
from tscam_core.explorer import MAP_NAMES, ExplainedImage, Explorer, Settings
from tscam_core.loading import load_model
from tscam_core.summary import ERROR_LABELS, ERROR_MEANINGS


@st.cache_resource(max_entries=4, show_spinner="Loading the checkpoint…")
def _explorer(checkpoint: str, stamp: float) -> Explorer:
    return Explorer(load_model(checkpoint))


@st.cache_resource(max_entries=64, show_spinner="Explaining the image…")
def _explained(checkpoint: str, stamp: float, image: str) -> ExplainedImage:
    return _explorer(checkpoint, stamp).explain(image)


def explain_row(run: Run, row: dict) -> ExplainedImage:
    """The image of ``row`` explained by the run's checkpoint, with the row's ground truth attached."""
    checkpoint, image = run.checkpoint, run.image_file(row["image_path"])
    if checkpoint is None:
        raise FileNotFoundError("the run records no checkpoint file")
    if not checkpoint.is_file():
        raise FileNotFoundError(f"the run's checkpoint {checkpoint} is not on this machine")
    if not image.is_file():
        raise FileNotFoundError(f"the image {image} is not on this machine")
    explained = _explained(str(checkpoint), checkpoint.stat().st_mtime, str(image))
    truth = GroundTruth(np.asarray(list(row["gt_boxes"]), np.float32).reshape(-1, 4), int(row["gt_class"]))
    return dataclasses.replace(explained, truth=truth, name=row["image_id"])


def show(run: Run, row: dict) -> None:
    """Stored facts of the image, then its live maps with threshold, layer and class controls."""
    st.subheader(f"{row['image_id']}: {row['gt_name']}, predicted {row['pred_name']} ({row['confidence']:.1%})")
    st.caption(f"Stored by the evaluation: IoU {row['iou']:.3f}, error type {ERROR_LABELS[row['error_type']]} ({ERROR_MEANINGS[row['error_type']]}), "
               f"GT-known IoU {row['gt_known_iou']:.3f}.")
    method = run.summary.settings.method
    if run.summary.settings.map is None:
        st.info(f"This run scored {method.label}; the live maps below are TS-CAM's, which this view draws.")
    try:
        explained = explain_row(run, row)
    except (TSCAMError, OSError) as error:
        st.warning(f"Cannot recompute the maps: {error}")
        return
    settings = _controls(run, explained)
    result = explained.result(settings)
    left, right = st.columns([3, 2])
    left.image(explained.render(settings), caption=f"M_c of {result.class_name}: predicted box red, GT green",
               width="stretch")
    with right:
        st.metric("IoU with GT", "-" if result.iou is None else f"{result.iou:.3f}")
        st.markdown("**Top-5 scores**")
        top5 = pd.DataFrame([{"class": c.name, "index": c.index, "score": round(c.score, 4)}
                             for c in explained.ranked_classes(5)])
        st.dataframe(top5, hide_index=True, key="detail_top5")
    maps = explained.render_maps(settings)
    for column, name in zip(st.columns(len(MAP_NAMES)), MAP_NAMES.values(), strict=True):
        column.image(maps[name], caption=name, width="stretch")
    st.markdown("**Attention of each block** (A^l)")
    gallery = explained.layer_gallery(settings)
    for start in range(0, len(gallery), 6):
        for column, (picture, label) in zip(st.columns(6), gallery[start:start + 6], strict=False):
            column.image(picture, caption=label, width="stretch")


def _controls(run: Run, explained: ExplainedImage) -> Settings:
    """Controls that start at the run's own settings, so the live map is the one the run scored."""
    depth = explained.depth
    first, second, third = st.columns(3)
    threshold = first.slider("CAM threshold", 0.0, 1.0, run.summary.settings.cam_threshold, 0.01,
                             key="detail_threshold")
    scored = data.scored_map(run.summary.settings.map, depth)
    start_mode, start_count = as_mode_and_count(scored.blocks, depth)
    modes = list(LAYER_MODES)
    mode = second.radio("Blocks in A*", modes, index=modes.index(start_mode), format_func=LAYER_MODES.__getitem__,
                        horizontal=True, key="detail_layer_mode")
    count = second.slider("k (number of blocks)", 1, depth, start_count, key="detail_layers") if depth > 1 else 1
    labels = {c.index: f"{c.name} ({c.score:.1%})" for c in explained.ranked_classes()}
    chosen = third.selectbox("Map of class", list(labels), format_func=labels.__getitem__,
                             key=f"detail_class_{explained.name}")
    spec = dataclasses.replace(scored, blocks=blocks_of(mode, count, depth))
    return Settings(class_index=chosen, map=spec, threshold=threshold)
