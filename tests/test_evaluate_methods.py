"""The evaluation of a localization method by name (``--method``), on the tiny CUB-layout dataset of
test_evaluate and tiny real checkpoints: any method's maps through the one per-image scorer, and a
method that is a map of the explanation scored exactly as that map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_model, tiny_info
from test_cnn_cam import cnn_info, make_cnn
from test_evaluate import write_dataset

from tscam_core import MapSpec, methods, save_checkpoint
from tscam_core.datasets import TorchWSOL, collate, open_dataset
from tscam_core.errors import ResultsError
from tscam_core.evaluate import (
    EvalSettings,
    ImageMaps,
    Protocol,
    evaluate,
    main,
    runner,
    score_image,
    scoring,
)
from tscam_core.loading import load_model
from tscam_core.metrics import cam_thresholds
from tscam_core.results import SUMMARY_FILE, load_results
from tscam_core.summary import RunMethod

#: What every command-line run here shares: one batch holds the whole split, so the maps scored by
#: hand below are the same tensors; a coarse MaxBoxAccV2 sweep keeps the reference scorer quick.
COMMON = ["--split", "test", "--workers", "0", "--threads", "1", "--batch-size", "8", "--cam-curve-interval", "0.05",
          "--thumbnails", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("cub"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(make_tiny_model(seed=3), tiny_info(), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def cli(dataset_root: Path, checkpoint: Path, out: Path, *arguments: str) -> int:
    return main(["--checkpoint", str(checkpoint), "--dataset", str(dataset_root), "--out", str(out), *COMMON,
                 *arguments])


@pytest.fixture(scope="module")
def method_runs(dataset_root, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("methods")
    for name in ("rollout", "chefer_generic"):
        assert cli(dataset_root, checkpoint, out / name, "--method", name) == 0
    return {name: load_results(out / name) for name in ("rollout", "chefer_generic")}


def scored_by_hand(name: str, checkpoint: Path, dataset_root: Path) -> list:
    """Each image's record from ``score_image``, on the maps ``method(model, images, [GT, top-1])`` gives
    for the split as one batch, the classes ranked by the model's logits."""
    model, dataset = load_model(checkpoint), open_dataset(dataset_root, "test")
    preprocess = model.info.transform
    items = TorchWSOL(dataset, preprocess)
    batch = collate([items[i] for i in range(len(dataset))])
    classes = model.explain(batch["image"]).top_classes(5)[1]
    maps = methods.get(name)(model, batch["image"], torch.stack([batch["label"], classes[:, 0]], dim=1)).numpy()
    protocol = Protocol(tuple(preprocess.input_size), 0.1, 0.5, "inclusive", cam_thresholds(0.05), cam_thresholds(0.05))
    records = []
    for i in range(len(dataset)):
        image, sample = dataset.load(i)
        _, gts = preprocess.geometry(image, sample.boxes)
        mask = runner.object_mask(sample, image.size, preprocess)
        records.append((score_image(ImageMaps(maps[i], int(batch["label"][i]), classes[i].tolist(), gts, mask),
                                    protocol), image.size))
    return records


@pytest.mark.parametrize("name", ["rollout", "chefer_generic"])
def test_a_methods_records_are_its_maps_scored_by_hand(method_runs, checkpoint, dataset_root, name):
    results = method_runs[name]
    preprocess = load_model(checkpoint).info.transform
    table, metrics = results.per_image, results.metrics
    expected = scored_by_hand(name, checkpoint, dataset_root)
    assert len(table) == len(expected) == 6
    for (_, row), (record, size) in zip(table.iterrows(), expected, strict=True):
        assert row["gt_known_iou"] == record.gt_known_iou and row["iou"] == record.top1.iou
        assert (row["iog"], row["iop"]) == (record.top1.iog, record.top1.iop)
        assert row["error_type"] == record.error
        assert (row["top1_loc"], row["top5_loc"], row["gt_known"]) == (
            record.hits.top1_loc, record.hits.top5_loc, record.hits.gt_known)
        np.testing.assert_allclose(list(row["pred_box"]), preprocess.boxes_to_original(record.pred_box, size)[0])
        np.testing.assert_allclose(list(row["gt_known_box"]),
                                   preprocess.boxes_to_original(record.gt_known_box, size)[0])
    curve = metrics["loc_vs_cam_threshold"]
    ious = np.stack([record.curve_ious for record, _ in expected])
    np.testing.assert_allclose(curve["cam_thresholds"], cam_thresholds(0.05))
    np.testing.assert_allclose(curve["gt_known"], (ious >= 0.5).mean(axis=0))
    best = np.stack([record.best_ious for record, _ in expected])
    assert metrics["maxboxacc_v2"]["iou_50"] == pytest.approx((best >= 0.5).mean(axis=0).max())
    # Only TS-CAM's explanation has variants and layer counts: this run's summary has neither key.
    assert "variants" not in metrics and "layer_count" not in metrics
    assert not any(column.startswith(("gt_known_layers_", "gt_known_trans")) for column in table.columns)
    assert metrics["pxap"] is not None and metrics["error_analysis"]


def test_the_summary_records_the_method(method_runs):
    for name, results in method_runs.items():
        method = methods.get(name)
        assert results.summary["settings"]["method"] == {"name": name, "label": method.label, "cost": method.cost}
        assert results.parsed.settings.method == RunMethod(name, method.label, method.cost)
        assert results.parsed.settings.map is None and "variant" not in results.summary["settings"]
        assert results.summary["settings"]["graph"] is False  # run eagerly: see the command-line line below
        assert "layer_count" not in results.parsed.metrics.curves and results.parsed.metrics.variants == {}
    assert method_runs["chefer_generic"].parsed.settings.method.cost == "forward+backward"


@pytest.mark.parametrize("name, how", [
    ("rollout", "the model runs eagerly: the traced graph is the explain pass alone"),
    ("chefer_generic", "the model runs eagerly: the traced graph is the explain pass alone"),
    ("tscam@last:1", "the model runs as one traced graph"),
])
def test_the_command_line_names_the_method_its_cost_and_how_the_model_runs(tmp_path, dataset_root, checkpoint,
                                                                           capsys, name, how):
    assert cli(dataset_root, checkpoint, tmp_path / "out", "--method", name, "--limit", "2") == 0
    method = methods.get(name)
    err = capsys.readouterr().err
    assert f"Method {name} ({method.label}): {methods.COST_LABELS[method.cost]}; {how}" in err
    # The checkpoint's threshold is its own map's: a method of another map is told to choose one.
    assert ("not for " + name in err) == (method.spec is None)


@pytest.mark.parametrize("name", ["rollout", "gradcam"])
@pytest.mark.parametrize("pool", ["thread", "process"])
def test_both_scoring_backends_give_a_methods_run_record_for_record(tmp_path, dataset_root, checkpoint,
                                                                    monkeypatch, name, pool):
    """A method's maps (rollout's on the token grid, pytorch-grad-cam's at the input size) go through
    the batched scorer and the reference one alike, in thread or forked process pools."""
    model, dataset = load_model(checkpoint), open_dataset(dataset_root, "test")
    settings = EvalSettings(method=name, batch_size=4, threads=2, pool=pool, thumbnails=1, cam_curve_interval=0.05)
    batched = evaluate(model, dataset, tmp_path / "batched", settings, progress=False)
    monkeypatch.setattr(scoring, "BACKEND", "reference")
    reference = evaluate(model, dataset, tmp_path / "reference", settings, progress=False)
    pd.testing.assert_frame_equal(batched.per_image, reference.per_image, check_exact=True)
    assert batched.metrics == reference.metrics
    assert all(parameter.grad is None for parameter in model.parameters())


def test_every_method_writes_the_accuracy_vs_cam_threshold_curve(tmp_path, dataset_root, checkpoint):
    """The curve a method's CAM threshold is chosen on is there for every method the model can give."""
    model, dataset = load_model(checkpoint), open_dataset(dataset_root, "test")
    for method in methods.available(model):
        settings = EvalSettings(method=method.name, limit=2, batch_size=2, threads=1, thumbnails=0,
                                cam_curve_interval=0.1)
        parsed = evaluate(model, dataset, tmp_path / method.name, settings, progress=False).parsed
        curve = parsed.metrics.curves["loc_vs_cam_threshold"]
        assert len(curve.x) == len(cam_thresholds(0.05)) and set(curve.series) == {"gt_known", "top1"}
        assert parsed.settings.method.name == method.name


@pytest.mark.parametrize("method, options", [
    ("tscam", []),
    ("tscam@last:1", ["--layers", "last:1"]),
    ("trans_cam+signed", ["--variant", "trans_cam", "--signed-class-maps"]),
    ("trans_attention@0", ["--variant", "trans_attention", "--layers", "0,"]),
])
def test_a_method_that_is_a_map_scores_exactly_as_that_map(tmp_path, dataset_root, checkpoint, method, options):
    assert cli(dataset_root, checkpoint, tmp_path / "method", "--method", method) == 0
    assert cli(dataset_root, checkpoint, tmp_path / "map", *options) == 0
    by_method, by_map = load_results(tmp_path / "method"), load_results(tmp_path / "map")
    texts = [json.loads((tmp_path / run / SUMMARY_FILE).read_text()) for run in ("method", "map")]
    assert json.dumps(texts[0]["metrics"]) == json.dumps(texts[1]["metrics"])  # byte for byte
    assert texts[0]["settings"] == texts[1]["settings"]
    pd.testing.assert_frame_equal(by_method.per_image, by_map.per_image, check_exact=True)
    assert by_method.parsed.settings.map == by_map.parsed.settings.map == MapSpec.parse(method)
    assert "variants" in texts[0]["metrics"] and "layer_count" in texts[0]["metrics"]


@pytest.mark.parametrize("arguments, message", [
    (["--method", "rollout", "--variant", "tscam"],
     "--method names the whole map, so --variant cannot go with it; write a TS-CAM map's blocks and sign"),
    (["--method", "tscam", "--layers", "last:1", "--signed-class-maps"],
     "so --layers and --signed-class-maps cannot go with it"),
    (["--method", "nope"], "unknown method 'nope'; choose one of tscam, "),
    (["--method", "tscam@last:9"], "method 'tscam@last:9': layer count 9 is outside 1..2"),
    (["--method", "cam"], "method 'cam': map variant 'cam' does not exist for a TS-CAM model; choose one of "
                          "tscam, trans_attention, trans_cam"),
])
def test_a_method_that_cannot_be_scored_is_one_clear_error(tmp_path, dataset_root, checkpoint, capsys, arguments,
                                                           message):
    assert cli(dataset_root, checkpoint, tmp_path / "out", *arguments) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_a_method_the_checkpoint_cannot_give_names_what_it_needs(tmp_path, dataset_root, capsys):
    cnn = save_checkpoint(make_cnn(), cnn_info(), tmp_path / "cnn.safetensors")
    assert cli(dataset_root, cnn, tmp_path / "out", "--method", "rollout") == 2
    assert capsys.readouterr().err == ("error: method 'rollout' needs the attention of a ViT's blocks (a TS-CAM "
                                       "model); CNNCAM has none; the methods it can give: cam\n")
    with pytest.raises(ValueError, match="method 'chefer_generic' needs the attention"):
        evaluate(load_model(cnn, family=None), open_dataset(dataset_root, "test"), tmp_path / "api",
                 EvalSettings(method="chefer_generic"), progress=False)
    assert not (tmp_path / "api" / SUMMARY_FILE).exists()


def test_a_method_and_a_map_together_are_refused():
    with pytest.raises(ValueError, match="method 'rollout' and map 'trans_cam' both name the map scored: give one"):
        EvalSettings(method="rollout", map=MapSpec("trans_cam"))
    assert EvalSettings(method="tscam@last:4").scored.spec == MapSpec("tscam", "last:4")


def test_results_written_before_methods_were_recorded_read_as_their_maps_own(method_runs, tmp_path, dataset_root,
                                                                            checkpoint):
    """A format-2 folder (no settings.method) reads as a run of its map's own method; a method field of
    the wrong kind is named."""
    folder = tmp_path / "old"
    assert cli(dataset_root, checkpoint, folder, "--variant", "trans_cam", "--layers", "last:1") == 0
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    del summary["settings"]["method"]
    (folder / SUMMARY_FILE).write_text(json.dumps({**summary, "format_version": 2}))
    settings = load_results(folder).parsed.settings
    assert settings.map == MapSpec("trans_cam", "last:1")
    assert settings.method == RunMethod("trans_cam@last:1", MapSpec("trans_cam", "last:1").label, "forward")
    for value, problem in (("rollout", "settings.method must be an object, got the string 'rollout'"),
                           ({"name": "x", "label": "y", "cost": "free"},
                            "settings.method.cost must be one of 'forward', 'forward+backward'"),
                           ({"name": "x", "cost": "forward"}, "summary.json lacks settings.method.label")):
        summary["settings"]["method"] = value
        (folder / SUMMARY_FILE).write_text(json.dumps({**summary, "format_version": 3}))
        with pytest.raises(ResultsError, match=problem.replace("+", r"\+")):
            load_results(folder)
