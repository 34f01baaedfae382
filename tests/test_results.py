"""The results folder: a write/load round trip, and a clear error for every way a folder can be wrong."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tscam_core.errors import TSCAMError
from tscam_core.results import (
    FORMAT_VERSION,
    REQUIRED_COLUMNS,
    SUMMARY_FILE,
    TABLE_FILE,
    ResultsError,
    load_results,
    write_results,
)


def summary(num_images: int = 2) -> dict:
    return {
        "name": "run",
        "checkpoint": {"source": "ckpt.safetensors", "num_classes": 3},
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
    with pytest.raises(ResultsError, match="version 1 is an older format; this tscam reads version 2"):
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
