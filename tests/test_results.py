"""The results folder: a write/load round trip, and a clear error for every way a folder can be wrong."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tscam_core.errors import TSCAMError
from tscam_core.explanation import MapSpec
from tscam_core.results import (
    FORMAT_VERSION,
    REQUIRED_COLUMNS,
    SUMMARY_FILE,
    TABLE_FILE,
    ResultsError,
    folder_in_root,
    load_results,
    write_results,
)
from tscam_core.summary import METRICS


def summary(num_images: int = 2) -> dict:
    return {
        "name": "run",
        "checkpoint": {"source": "ckpt.safetensors", "num_classes": 3, "class_names": ["a", "b", "c"]},
        "dataset": {"path": "data", "kind": "cub", "split": "test", "num_images": num_images},
        "settings": {"cam_threshold": 0.1},
        "metrics": {"top1_cls": 0.5, "top5_cls": 1.0, "top1_loc": 0.5, "top5_loc": 0.5, "gt_known_loc": 0.5,
                    "pxap": float("nan"), "curve": np.array([0.25, 0.5])},
        "versions": {"tscam": "0.1.0"},
    }


def row(image_id: str, correct: bool) -> dict:
    return {
        "image_id": image_id, "image_path": f"images/{image_id}.png", "gt_class": 1,
        "gt_boxes": [[0.0, 0.0, 4.0, 4.0], [5.0, 5.0, 8.0, 8.0]], "width": 10, "height": 10,
        "top5_classes": [1, 0, 2], "top5_scores": [0.5, 0.3, 0.2], "pred_box": [0.0, 0.0, 4.0, 4.0],
        "gt_known_box": [0.0, 0.0, 4.0, 4.0], "iou": 1.0 if correct else 0.0, "iog": 1.0, "iop": 1.0,
        "gt_known_iou": 1.0, "error_type": "correct" if correct else "ot", "correct_cls": True,
        "top1_loc": correct, "top5_loc": correct, "gt_known": correct,
        "thumbnail": None if correct else f"{image_id}.png",
    }


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "run"
    write_results(path, summary(), [row("a", True), row("b", False)])
    (path / "thumbnails").mkdir()
    Image.new("RGB", (4, 4)).save(path / "thumbnails" / "b.png")
    return path


def test_round_trip(folder):
    results = load_results(folder)
    assert results.name == "run"
    assert results.summary["format_version"] == FORMAT_VERSION
    parsed = results.parsed  # the same file, typed
    assert parsed.checkpoint.class_names == ("a", "b", "c") and parsed.dataset.num_images == 2
    assert parsed.settings.cam_threshold == 0.1 and parsed.settings.map == MapSpec()
    assert [parsed.metrics.value(m) for m in METRICS] == [0.5, 1.0, 0.5, 0.5, 0.5, None, None, None, None, None]
    # NaN becomes null and numpy arrays become lists, so any JSON reader can open the summary.
    assert results.metrics["pxap"] is None and results.metrics["curve"] == [0.25, 0.5]
    table = results.per_image
    assert isinstance(table, pd.DataFrame) and table["image_id"].tolist() == ["a", "b"]
    assert [list(box) for box in table.loc[0, "gt_boxes"]] == [[0, 0, 4, 4], [5, 5, 8, 8]]
    assert table["gt_known"].tolist() == [True, False]
    assert results.per_image is table  # read once, then cached
    assert results.thumbnail_path("b") == folder / "thumbnails" / "b.png"
    assert results.thumbnail_path("a") is None
    assert results.thumbnails() == {"b": folder / "thumbnails" / "b.png"}


def test_empty_run_round_trips(tmp_path):
    results = write_results(tmp_path / "empty", summary(num_images=0), [])
    assert len(results.per_image) == 0 and set(REQUIRED_COLUMNS) <= set(results.per_image.columns)


def test_results_files_follow_the_umask(tmp_path):
    """Written atomically through a temporary file, yet readable as any file: 0666 less the umask, not 0600."""
    previous = os.umask(0o022)
    try:
        write_results(tmp_path / "run", summary(num_images=1), [row("a", True)])
    finally:
        os.umask(previous)
    for name in (SUMMARY_FILE, TABLE_FILE):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o644, name
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")] == []


def test_missing_folder(tmp_path):
    with pytest.raises(ResultsError, match="no such results folder"):
        load_results(tmp_path / "nothing")


def test_unfinished_and_foreign_folders(tmp_path, folder):
    (folder / SUMMARY_FILE).unlink()
    with pytest.raises(ResultsError, match="no summary.json.*did not finish"):
        load_results(folder)
    with pytest.raises(ResultsError, match="not a results folder"):
        load_results(tmp_path)


def test_missing_or_partial_table(folder):
    full = pd.read_parquet(folder / TABLE_FILE)
    full.iloc[:1].to_parquet(folder / TABLE_FILE)
    with pytest.raises(ResultsError, match="1 rows but the summary counts 2 images"):
        load_results(folder)
    full.drop(columns=["iou", "iop"]).to_parquet(folder / TABLE_FILE)
    with pytest.raises(ResultsError, match="lacks the columns iou, iop"):
        load_results(folder)
    (folder / TABLE_FILE).write_bytes(b"not parquet")
    with pytest.raises(ResultsError, match="damaged"):
        load_results(folder)
    (folder / TABLE_FILE).unlink()
    with pytest.raises(ResultsError, match="per_image.parquet is missing"):
        load_results(folder)


def edit_summary(folder, change) -> None:
    data = json.loads((folder / SUMMARY_FILE).read_text())
    change(data)
    (folder / SUMMARY_FILE).write_text(json.dumps(data))


def test_old_and_foreign_versions(folder):
    # Version 1 scored box pixels half-open (before the reference codes' conventions): refused.
    edit_summary(folder, lambda d: d.update(format_version=1))
    with pytest.raises(ResultsError, match="version 1 is an older format; this tscam reads versions 2 and 3"):
        load_results(folder)
    edit_summary(folder, lambda d: d.update(format_version=7))
    with pytest.raises(ResultsError, match="version 7 is another format"):
        load_results(folder)
    edit_summary(folder, lambda d: d.update(format="something-else"))
    with pytest.raises(ResultsError, match="not a tscam results summary"):
        load_results(folder)


def test_summary_missing_fields_or_damaged(folder):
    edit_summary(folder, lambda d: (d.pop("dataset"), d["metrics"].pop("gt_known_loc")))
    with pytest.raises(ResultsError, match="lacks dataset, metrics.gt_known_loc"):
        load_results(folder)
    (folder / SUMMARY_FILE).write_text("{ not json")
    with pytest.raises(ResultsError, match="not valid JSON") as caught:
        load_results(folder)
    assert isinstance(caught.value, TSCAMError) and caught.value.path == str(folder)


def set_field(path: str, value):
    """A change to summary.json: the field at the dotted ``path`` set to ``value``."""
    *parents, last = path.split(".")

    def change(data: dict) -> None:
        for key in parents:
            data = data[key]
        data[last] = value
    return change


@pytest.mark.parametrize(("field", "value", "message"), [
    ("metrics.top1_loc", "0.5", "metrics.top1_loc must be a number in 0..1 or null, got the string '0.5'"),
    ("metrics.gt_known_loc", 1.5, "metrics.gt_known_loc must be a number in 0..1 or null, got the number 1.5"),
    ("settings.cam_threshold", "0.1", "settings.cam_threshold must be a number in 0..1, got the string '0.1'"),
    ("dataset", "data", "dataset must be an object, got the string 'data'"),
    ("dataset.num_images", 2.5, "dataset.num_images must be a whole number of 0 or more, got the number 2.5"),
    ("checkpoint.class_names", 3, "checkpoint.class_names must be a list, got the number 3"),
    ("checkpoint.class_names", ["a", 2, "c"], "checkpoint.class_names[1] must be a string, got the number 2"),
    ("checkpoint.class_names", ["a"], "checkpoint.class_names must be a list of 3 names (checkpoint.num_classes), "
                                      "got a list of 1 items"),
    ("name", ["run"], "name must be a string, got a list of 1 items"),
    ("settings.layers", {"first": 2}, "settings.layers must be null, 'first:k', 'last:k' or a list of block indices"),
    ("settings.layers", "middle:2", "settings.layers must be null, 'first:k', 'last:k' or a list of block indices"),
    ("settings.variant", "gradcam", "settings.variant must be one of tscam, trans_attention, trans_cam, cam"),
    ("settings.signed_class_maps", "no", "settings.signed_class_maps must be true or false, got the string 'no'"),
    ("metrics.variants", {"tscam": 0.5}, "metrics.variants.tscam must be an object, got the number 0.5"),
    ("metrics.error_analysis", {"cls": "high"}, "metrics.error_analysis.cls must be a number in 0..1 or null"),
    ("metrics.maxboxacc_v2", [0.5], "metrics.maxboxacc_v2 must be an object, got a list of 1 items"),
    ("metrics.loc_vs_iou", {"iou_thresholds": [0.3, 0.5], "gt_known": [0.5]},
     "metrics.loc_vs_iou.gt_known must be a list of 2 values (one per iou_thresholds), got a list of 1 items"),
    ("metrics.per_class", {"class_names": ["a", "b"], "gt_known": [0.5, None], "top1_cls": [1.0, None],
                           "count": [2, "0"]}, "metrics.per_class.count[1] must be a whole number of 0 or more"),
    ("versions", "0.1", "versions must be an object, got the string '0.1'"),
])
def test_a_field_of_the_wrong_type_is_named(folder, field, value, message):
    edit_summary(folder, set_field(field, value))
    with pytest.raises(ResultsError) as caught:
        load_results(folder)
    assert str(caught.value).startswith(f"{folder}: summary.json: {message}")


def test_a_required_field_inside_an_object_is_named_when_missing(folder):
    edit_summary(folder, lambda d: d["checkpoint"].pop("class_names"))
    with pytest.raises(ResultsError, match="summary.json lacks checkpoint.class_names$"):
        load_results(folder)


def test_the_metric_catalogue_is_the_documented_one():
    """docs/results-format.md's table of scalar metrics lists the catalogue, in its order."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "results-format.md").read_text()
    documented = re.findall(r"^\| `(metrics\.[a-z0-9_.]+)` \| ([^|]+) \|", doc, flags=re.MULTILINE)
    assert documented == [(f"metrics.{m.path}", m.label) for m in METRICS]


def test_folders_outside_the_root_get_one_refusal_whether_they_exist_or_not(tmp_path, folder):
    root = tmp_path / "served"
    root.mkdir()
    (root / "inside").symlink_to(folder)  # a run put in the root by a link: the link leaves the root
    (root / "real").mkdir()
    assert folder_in_root("real", root) == root / "real" and folder_in_root(root / "real", root) == root / "real"
    assert folder_in_root("real/../missing", root) == root / "missing"  # inside: load_results tells the rest
    answers = {given: str(pytest.raises(ResultsError, folder_in_root, given, root).value).removeprefix(given)
               for given in (str(folder), str(tmp_path / "absent"), "../run", "../absent", "inside", "/")}
    assert set(answers.values()) == {": outside the results root this dashboard serves"}


def test_a_summary_nested_too_deep_is_named_not_a_recursion_error(tmp_path):
    (tmp_path / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ResultsError, match="summary.json is not valid JSON"):
        load_results(tmp_path)
