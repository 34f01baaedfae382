"""The dashboard's method comparison, on real evaluation runs of different methods (a tiny real
checkpoint on the tiny CUB-layout dataset of test_evaluate): the table's content, its charts, and the
other pages with a run that has no variants or layer counts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_model, tiny_info
from test_dashboard import chart, start, values
from test_evaluate import write_dataset

from tscam_core import dashboard_data as data
from tscam_core import methods, save_checkpoint
from tscam_core.datasets import open_dataset
from tscam_core.evaluate import EvalSettings, evaluate
from tscam_core.loading import load_model
from tscam_core.results import load_results
from tscam_core.summary import parse_summary

#: Run name -> how it was evaluated: two TS-CAM runs at other thresholds around a rollout run, so
#: that the table must bring the runs of one method together.
RUNS = {
    "tscam_a": {},
    "rollout": {"method": "rollout"},
    "tscam_b": {"cam_threshold": 0.3},
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("methods")
    dataset = open_dataset(write_dataset(root / "cub"), "test")
    model = load_model(save_checkpoint(make_tiny_model(seed=3), tiny_info(), root / "tiny.safetensors"))
    for name, chosen in RUNS.items():
        settings = EvalSettings(batch_size=8, threads=1, thumbnails=0, cam_curve_interval=0.05, **chosen)
        evaluate(model, dataset, root / name, settings, name=name, progress=False)
    return {name: root / name for name in RUNS}


def stored(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def test_the_method_table_groups_runs_by_method_with_their_metrics(folders):
    summaries = {name: load_results(folder).parsed for name, folder in folders.items()}
    table = data.method_table(summaries)
    assert list(table.index) == ["tscam_a", "tscam_b", "rollout"]
    assert list(table["method"]) == ["tscam", "tscam", "rollout"]
    assert table.loc["rollout", "label"] == methods.get("rollout").label
    assert table.loc["rollout", "cost"] == "forward" and table.loc["tscam_b", "CAM threshold"] == 0.3
    for name, folder in folders.items():
        metrics = stored(folder)["metrics"]
        for label, value in (("Top-1 Loc", metrics["top1_loc"]), ("GT-known Loc", metrics["gt_known_loc"]),
                             ("MaxBoxAccV2 mean", metrics["maxboxacc_v2"]["mean"]), ("PxAP", metrics["pxap"])):
            assert table.loc[name, label] == pytest.approx(100 * value)
    bars = data.method_bars(table)
    assert len(bars) == 3 * 4 and list(bars["run"].unique()) == list(table.index)
    rollout = bars[bars["run"] == "rollout"].set_index("metric")["percent"]
    assert rollout["GT-known Loc"] == pytest.approx(100 * stored(folders["rollout"])["metrics"]["gt_known_loc"])


def test_a_metric_a_run_lacks_is_no_bar(folders):
    summary = stored(folders["rollout"])
    summary["metrics"]["pxap"] = None  # a dataset without masks
    table = data.method_table({"plain": parse_summary(summary, folders["rollout"])})
    assert math.isnan(table.loc["plain", "PxAP"])
    assert list(data.method_bars(table)["metric"]) == ["Top-1 Loc", "GT-known Loc", "MaxBoxAccV2 mean"]


def test_curves_and_the_run_table_name_each_runs_method(folders):
    summaries = {name: load_results(folder).parsed for name, folder in folders.items()}
    curve = data.curve_frame(summaries, "loc_vs_cam_threshold")
    assert dict(zip(curve["run"], curve["method"], strict=True)) == {"tscam_a": "tscam", "tscam_b": "tscam",
                                                                     "rollout": "rollout"}
    identity = data.identity_table(summaries)
    assert identity.loc["method", "rollout"] == methods.get("rollout").label
    assert identity.loc["method", "tscam_a"] == methods.get("tscam").label
    assert identity.loc["cost", "rollout"] == "forward"


def test_the_compare_methods_page_shows_the_table_and_charts_by_method(monkeypatch, folders):
    app = start(monkeypatch, *folders.values())
    app.switch_page("views/methods.py").run()
    assert not app.exception, app.exception
    assert [t.value for t in app.title] == ["Compare methods"]
    shown = app.dataframe[0].value
    assert list(shown.index) == ["tscam_a", "tscam_b", "rollout"] and list(shown["method"]) == ["tscam", "tscam", "rollout"]
    assert not app.warning  # one dataset and split: comparable

    bars = chart(app, "chart_method_metrics")
    assert {trace["name"] for trace in bars["data"]} == {"tscam", "rollout"}
    rollout = np.concatenate([values(trace["y"]) for trace in bars["data"] if trace["name"] == "rollout"])
    metrics = stored(folders["rollout"])["metrics"]
    expected = [metrics["top1_loc"], metrics["gt_known_loc"], metrics["maxboxacc_v2"]["mean"], metrics["pxap"]]
    np.testing.assert_allclose(sorted(rollout), sorted(100 * np.array(expected)))

    lines = chart(app, "chart_method_cam")["data"]
    assert {trace["name"] for trace in lines} == {"tscam, GT-known", "tscam, Top-1", "rollout, GT-known", "rollout, Top-1"}
    for trace in lines:
        run = set(trace["hovertext"])
        assert len(run) == 1  # a line per run, coloured by its method
        (run,) = run
        method, criterion = trace["name"].split(", ")
        assert method == RUNS[run].get("method", "tscam")
        curve = stored(folders[run])["metrics"]["loc_vs_cam_threshold"]
        series = curve["gt_known" if criterion == "GT-known" else "top1"]
        np.testing.assert_allclose(values(trace["x"]), curve["cam_thresholds"])
        np.testing.assert_allclose(values(trace["y"]), 100 * np.array(series))

    app.multiselect(key="methods_runs").set_value(["rollout"]).run()
    assert list(app.dataframe[0].value.index) == ["rollout"]
    app.multiselect(key="methods_runs").set_value([]).run()
    assert not app.exception and app.info[0].value == "Pick the runs to compare."


def test_a_run_without_variants_or_layer_counts_leaves_them_out_of_the_overview(monkeypatch, folders):
    app = start(monkeypatch, folders["tscam_a"], folders["rollout"])
    assert not app.exception, app.exception
    assert {t["name"].split(", ")[0] for t in chart(app, "chart_layers")["data"]} == {"tscam_a"}
    assert {t["name"].split(", ")[0] for t in chart(app, "chart_cam")["data"]} == {"tscam_a", "rollout"}
    assert "rollout" not in json.dumps(chart(app, "chart_variants")["layout"])


def test_the_detail_of_a_rollout_run_says_its_live_maps_are_tscams(monkeypatch, folders):
    app = start(monkeypatch, folders["rollout"])
    app.switch_page("views/failures.py").run()
    app.button[0].click().run()
    assert not app.exception, app.exception
    assert app.info[0].value == (f"This run scored {methods.get('rollout').label}; the live maps below are "
                                 "TS-CAM's, which this view draws.")
    assert app.slider(key="detail_layers").value == 2  # TS-CAM over every block


def test_runs_of_other_splits_are_flagged_as_not_comparable(monkeypatch, folders, tmp_path):
    from tscam_core.results import write_results

    summary = stored(folders["rollout"])
    summary.pop("format"), summary.pop("format_version")
    summary["dataset"]["split"] = "val"
    write_results(tmp_path / "rollout_val", summary, load_results(folders["rollout"]).per_image)
    app = start(monkeypatch, folders["tscam_a"], tmp_path / "rollout_val")
    app.switch_page("views/methods.py").run()
    assert not app.exception, app.exception
    assert app.warning[0].value.startswith("These runs were scored on different datasets or splits")
    assert list(app.dataframe[0].value["dataset"]) == ["cub / test", "cub / val"]
