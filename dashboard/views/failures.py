"""Failure browser: filter a run's images, page through their thumbnails, open one's live maps."""

import streamlit as st

from dashboard import detail, widgets
from tscam_core import dashboard_data as data
from tscam_core.summary import ERROR_LABELS, ERROR_TYPES, error_legend

loaded = widgets.require_runs()
st.title("Failure browser")
name = st.selectbox("Run", list(loaded), key="failures_run") if len(loaded) > 1 else next(iter(loaded))
run = loaded[name]
images = run.images

present = [kind for kind in ERROR_TYPES if kind in images["error_type"].unique()]
with st.sidebar:
    st.header("Filters")
    kinds = st.multiselect("Error type", present, default=[k for k in present if k != "correct"],
                           format_func=ERROR_LABELS.get, key="filter_errors", help=error_legend())
    classes = st.multiselect("Class", range(len(run.class_names)), format_func=run.class_names.__getitem__,
                             key="filter_classes", placeholder="every class")
    iou_range = st.slider("IoU of the top-1 box", 0.0, 1.0, (0.0, 1.0), 0.01, key="filter_iou")
    confidence = st.slider("Top-1 confidence", 0.0, 1.0, (0.0, 1.0), 0.01, key="filter_confidence")

chosen = data.filter_images(images, data.ImageFilter(tuple(kinds), tuple(classes), iou_range, confidence))
st.markdown(f"**{len(chosen):,}** of {len(images):,} images match.")


def _open(image_id: str) -> None:
    st.session_state.detail_image = image_id


if "detail_image" in st.session_state:
    selected = images[images["image_id"] == st.session_state.detail_image]
    if len(selected):
        with st.container(border=True):
            detail.show(run, selected.iloc[0].to_dict())
            st.button("Close", key="detail_close", on_click=st.session_state.pop, args=("detail_image",))

if chosen.empty:
    st.info("No image matches these filters.")
else:
    widgets.grid(run, widgets.paged(chosen, "failures"), "failures", on_open=_open)
