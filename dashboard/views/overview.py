"""Overview: the metrics of every loaded run side by side, and the paper's curves and tables as charts."""

import streamlit as st

from dashboard import charts, widgets
from tscam_core import dashboard_data as data
from tscam_core.summary import error_legend

loaded = widgets.require_runs()
summaries = {name: run.summary for name, run in loaded.items()}
figures = charts.overview_figures(summaries)

st.title("Overview")
st.subheader("Metrics (%)")
st.dataframe(data.metrics_table(summaries).round(2), key="metrics_table")
with st.expander("What was evaluated"):
    st.dataframe(data.identity_table(summaries), key="identity_table")

for keys in (("chart_iou", "chart_cam"), ("chart_layers", "chart_errors")):
    for column, key in zip(st.columns(2), keys, strict=True):
        column.plotly_chart(figures[key], key=key)
with st.expander("Error types (the paper's Algorithm 1)"):
    st.markdown(error_legend())
st.plotly_chart(figures["chart_variants"], key="chart_variants")

name = st.selectbox("Per-class accuracy of", list(loaded), key="per_class_run") if len(loaded) > 1 else next(iter(loaded))
st.plotly_chart(figures[f"per_class:{name}"], key="chart_per_class")
