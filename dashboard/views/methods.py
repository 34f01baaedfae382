"""Compare methods: chosen runs' main metrics side by side and their accuracy-vs-CAM-threshold curves,
coloured by the localization method each run scored."""

import streamlit as st

from dashboard import charts, widgets
from tscam_core import dashboard_data as data

loaded = widgets.require_runs()
st.title("Compare methods")
chosen = st.multiselect("Runs", list(loaded), default=list(loaded), key="methods_runs")
if not chosen:
    st.info("Pick the runs to compare.")
    st.stop()
summaries = {name: loaded[name].summary for name in chosen}
table = data.method_table(summaries)
if table["dataset"].nunique() > 1:
    st.warning("These runs were scored on different datasets or splits: their numbers are not comparable.")
st.dataframe(table.round(2), key="methods_table")
figures = charts.method_figures(summaries)
for key in ("chart_method_metrics", "chart_method_cam"):
    st.plotly_chart(figures[key], key=key)
st.caption("Runs of the same method share a colour. A method's CAM threshold is best chosen on a validation "
           "split's curve, then used for its test run (`python -m tscam_core.evaluate --method NAME --threshold T`).")
