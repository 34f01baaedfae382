"""Compare two runs: metric deltas, and the images one run localizes and the other does not."""

import streamlit as st

from dashboard import charts, widgets
from tscam_core import dashboard_data as data
from tscam_core.summary import CRITERIA

loaded = widgets.require_runs(minimum=2)
names = list(loaded)
st.title("Compare two runs")
left, middle, right = st.columns(3)
first = left.selectbox("First run", names, index=0, key="compare_first")
second = middle.selectbox("Second run", names, index=1, key="compare_second")
criterion = right.selectbox("Localized means", list(CRITERIA), format_func=CRITERIA.get,
                            key="compare_criterion")
a, b = loaded[first], loaded[second]
if first == second:
    st.warning("The same run is picked twice: pick two different runs.")
    st.stop()

deltas = data.metric_deltas(a.summary, b.summary).rename(columns={"first": first, "second": second})
st.dataframe(deltas.round(2), key="compare_deltas")
st.plotly_chart(charts.delta_chart(data.metric_deltas(a.summary, b.summary), first, second), key="chart_deltas")

pairs = data.compare_runs(a.images, b.images, criterion)
only_first = pairs[pairs["localized_a"] & ~pairs["localized_b"]]
only_second = pairs[~pairs["localized_a"] & pairs["localized_b"]]
counts = st.columns(4)
counts[0].metric("Images in both runs", f"{len(pairs):,}")
counts[1].metric("Both localize", f"{int((pairs['localized_a'] & pairs['localized_b']).sum()):,}")
counts[2].metric(f"Only {first}", f"{len(only_first):,}")
counts[3].metric(f"Only {second}", f"{len(only_second):,}")

for tab, (winner, loser, ids) in zip(
    st.tabs([f"{first} localizes, {second} does not", f"{second} localizes, {first} does not"]),
    ((a, b, only_first), (b, a, only_second)), strict=True,
):
    with tab:
        if ids.empty:
            st.info("No such image.")
            continue
        key = f"compare_{'first' if winner is a else 'second'}"
        rows = widgets.paged(loser.images[loser.images["image_id"].isin(ids["image_id"])], key)
        st.caption(f"Shown as {loser.name} saw them (its box in red); {winner.name} localized each one.")
        widgets.grid(loser, rows, key)
