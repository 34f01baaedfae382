"""The evaluation end to end on a tiny generated CUB-layout dataset and a tiny real checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_CLASSES, make_tiny_model, tiny_info
from PIL import Image

from tscam_core import (
    DatasetError,
    MapSpec,
    box_from_map,
    boxes_from_map,
    explain_images,
    load_model,
    localize,
    save_checkpoint,
)
from tscam_core.boxes import upsample_map
from tscam_core.datasets import TorchWSOL, collate, open_dataset
from tscam_core.evaluate import EvalSettings, ScoringPool, evaluate, main, parse_layers, runner, scoring
from tscam_core.evaluate import settings as settings_module
from tscam_core.metrics import cam_thresholds
from tscam_core.overlaps import box_iou, maxboxacc_boxes
from tscam_core.overlay import GT_COLOR, PRED_COLOR, DrawnBox, overlay
from tscam_core.results import PARTIAL_THUMBNAIL_DIR, load_results
from tscam_core.testing.bad_files import encode, noise
from tscam_core.transforms import resize

REPO = Path(__file__).resolve().parents[1]
#: (class, boxes x0 y0 x1 y1, is_train) per image; image 3 has two objects, image 4 touches the border.
IMAGES = [
    (0, [[4, 6, 20, 30]], 0),
    (1, [[10, 2, 44, 22]], 0),
    (2, [[0, 0, 48, 40]], 0),
    (3, [[2, 2, 14, 14], [30, 20, 46, 38]], 0),
    (4, [[28, 20, 48, 40]], 0),
    (0, [[8, 8, 30, 30]], 0),
    (1, [[5, 5, 25, 25]], 1),
]


def write_dataset(root: Path, masks: bool = True) -> Path:
    """48 x 40 noise images with bright rectangles, in the CUB layout (with object masks)."""
    rng = np.random.default_rng(0)
    lines = {name: [] for name in ("images", "image_class_labels", "train_test_split", "bounding_boxes")}
    for number, (label, boxes, is_train) in enumerate(IMAGES, 1):
        pixels = rng.integers(0, 80, (40, 48, 3), dtype=np.uint8)
        mask = np.zeros((40, 48), np.uint8)
        for x0, y0, x1, y1 in boxes:
            pixels[y0:y1, x0:x1] = (220, 40 * label, 90)
            mask[y0:y1, x0:x1] = 255
            lines["bounding_boxes"].append(f"{number} {x0} {y0} {x1 - x0} {y1 - y0}")
        relative = f"c{label}/img_{number}.png"
        (root / "images" / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / relative)
        if masks:
            (root / "masks" / f"c{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "masks" / relative)
        lines["images"].append(f"{number} {relative}")
        lines["image_class_labels"].append(f"{number} {label + 1}")
        lines["train_test_split"].append(f"{number} {is_train}")
    for name, rows in lines.items():
        (root / f"{name}.txt").write_text("\n".join(rows) + "\n")
    (root / "classes.txt").write_text("".join(f"{i + 1} class_{i}\n" for i in range(TINY_CLASSES)))
    return root


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("cub"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(make_tiny_model(seed=3), tiny_info(), path)


@pytest.fixture(scope="module")
def run(dataset_root, checkpoint, tmp_path_factory):
    model = load_model(checkpoint)
    dataset = open_dataset(dataset_root, "test")
    settings = EvalSettings(batch_size=4, threads=2, thumbnails=2, cam_curve_interval=0.05)
    return model, dataset, evaluate(model, dataset, tmp_path_factory.mktemp("out") / "tiny", settings, progress=False)


def test_summary_agrees_with_the_per_image_table(run):
    _, _, results = run
    table, metrics = results.per_image, results.metrics
    assert len(table) == 6 and results.summary["dataset"]["num_images"] == 6
    for key, column in (("top1_cls", "correct_cls"), ("top1_loc", "top1_loc"), ("top5_loc", "top5_loc"),
                        ("gt_known_loc", "gt_known")):
        assert metrics[key] == pytest.approx(table[column].mean())
    # With 5 classes every GT class is in the top 5.
    assert metrics["top5_cls"] == 1.0
    counts = table["error_type"].value_counts(normalize=True)
    for error, fraction in metrics["error_analysis"].items():
        assert fraction == pytest.approx(counts.get(error, 0.0))
    assert sum(metrics["error_analysis"].values()) + metrics["top1_loc"] == pytest.approx(1.0)
    assert (table["error_type"] == "correct").tolist() == table["top1_loc"].tolist()


def test_each_row_matches_the_one_image_path(run, dataset_root):
    """GT-known boxes and IoUs equal what localize() gives image by image, in the model-input frame."""
    model, dataset, results = run
    preprocess = model.info.transform
    for index, row in results.per_image.iterrows():
        image, sample = dataset.load(index)
        explanation = explain_images(model, [image])
        found = localize(explanation, sample.label, preprocess.input_size, threshold=0.1)
        _, gts = preprocess.geometry(image, sample.boxes)
        assert row["gt_known_iou"] == pytest.approx(float(box_iou(found.box, gts).max()), abs=1e-6)
        np.testing.assert_allclose(list(row["gt_known_box"]),
                                   preprocess.boxes_to_original(found.box, image.size)[0], atol=1e-4)
        for k in range(1, model.depth + 1):
            layer_box = localize(explanation, sample.label, preprocess.input_size, 0.1, MapSpec("tscam", f"first:{k}")).box
            assert row[f"gt_known_layers_{k}"] == (box_iou(layer_box, gts).max() >= 0.5)
        for name in ("trans_attention", "trans_cam"):
            variant_box = localize(explanation, sample.label, preprocess.input_size, 0.1, MapSpec(name)).box
            assert row[f"gt_known_{name}"] == (box_iou(variant_box, gts).max() >= 0.5)
        top = explanation.top_classes(5)[1][0].tolist()
        assert list(row["top5_classes"]) == top
        assert row["correct_cls"] == (top[0] == sample.label)
        assert [list(b) for b in row["gt_boxes"]] == sample.boxes.tolist()


def test_variants_and_layer_counts_come_from_the_same_pass(run):
    model, _, results = run
    metrics, table = results.metrics, results.per_image
    depth = model.depth
    assert metrics["layer_count"]["counts"] == list(range(1, depth + 1))
    # All blocks is the main setting; the tscam variant is too.
    assert metrics["layer_count"]["gt_known"][-1] == pytest.approx(metrics["gt_known_loc"])
    assert metrics["variants"]["tscam"] == {k: pytest.approx(metrics[k]) for k in ("top1_loc", "top5_loc", "gt_known_loc")}
    assert table[f"gt_known_layers_{depth}"].tolist() == table["gt_known"].tolist()
    for name in ("trans_attention", "trans_cam"):
        assert metrics["variants"][name]["gt_known_loc"] == pytest.approx(table[f"gt_known_{name}"].mean())
    for k in range(1, depth + 1):
        assert metrics["layer_count"]["gt_known"][k - 1] == pytest.approx(table[f"gt_known_layers_{k}"].mean())


def test_stricter_metrics_and_curves(run):
    _, _, results = run
    metrics = results.metrics
    box = metrics["maxboxacc_v2"]
    assert box["iou_30"] >= box["iou_50"] >= box["iou_70"]
    assert box["mean"] == pytest.approx((box["iou_30"] + box["iou_50"] + box["iou_70"]) / 3)
    assert 0.0 <= metrics["pxap"] <= 1.0
    curve = metrics["loc_vs_iou"]
    index = curve["iou_thresholds"].index(0.5)
    # The curve follows the accuracies' tests: GT-known at IoU >= 0.5, Top-1 at IoU > 0.5.
    assert curve["gt_known"][index] == pytest.approx(metrics["gt_known_loc"])
    assert curve["top1"][index] == pytest.approx(metrics["top1_loc"])
    assert curve["gt_known"] == sorted(curve["gt_known"], reverse=True)
    cam_curve = metrics["loc_vs_cam_threshold"]
    assert cam_curve["gt_known"][cam_curve["cam_thresholds"].index(0.1)] == pytest.approx(metrics["gt_known_loc"])
    assert len(metrics["per_class"]["count"]) == TINY_CLASSES and sum(metrics["per_class"]["count"]) == 6


def test_thumbnails_for_every_failure(run):
    model, _, results = run
    table = results.per_image
    for _, row in table.iterrows():
        if row["error_type"] != "correct":
            assert pd.notna(row["thumbnail"])
        if pd.notna(row["thumbnail"]):
            path = results.thumbnail_path(row["image_id"])
            assert path is not None and path.name == row["thumbnail"]
            with Image.open(path) as image:
                # The 32-px model input is under the 128-px thumbnail size: shown as is, never enlarged.
                assert image.size == (32, 32) == tuple(model.info.transform.input_size)
    assert len(results.thumbnails()) == table["thumbnail"].notna().sum()


def test_no_masks_no_pxap_and_limit(tmp_path, checkpoint):
    root = write_dataset(tmp_path / "plain", masks=False)
    before = torch.get_num_threads()
    results = evaluate(load_model(checkpoint), open_dataset(root, "test"), tmp_path / "out",
                       EvalSettings(limit=3, threads=1, pool="process", thumbnails=0, cam_curve_interval=0.1,
                                    model_threads=before + 1), progress=False)
    assert results.metrics["pxap"] is None
    assert len(results.per_image) == 3 and results.summary["settings"]["limit"] == 3
    assert torch.get_num_threads() == before  # model_threads holds for the run only


def test_wrong_number_of_classes(tmp_path, dataset_root):
    model = make_tiny_model(num_classes=3)
    model.info = tiny_info(num_classes=3)
    with pytest.raises(DatasetError, match="5 classes but the checkpoint .* has 3"):
        evaluate(model, open_dataset(dataset_root, "test"), tmp_path / "out", progress=False)


def test_empty_split(tmp_path, dataset_root, checkpoint):
    with pytest.raises(DatasetError, match="the test split has no images"):
        evaluate(load_model(checkpoint), open_dataset(dataset_root, "test"), tmp_path / "out", EvalSettings(limit=0))


def test_an_out_folder_with_results_is_kept(tmp_path, dataset_root, checkpoint, capsys):
    """Nothing already saved is lost: a finished run is refused without --overwrite, and a run
    that fails midway leaves the folder (thumbnails included) as it was."""
    out = tmp_path / "out"
    base = ["--checkpoint", str(checkpoint), "--dataset", str(dataset_root), "--out", str(out), "--workers", "0",
            "--threads", "1", "--device", "cpu", "--cam-curve-interval", "0.1"]
    assert main(base) == 0
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main([*base, "--limit", "2"]) == 2
    assert "already holds evaluation results" in capsys.readouterr().err

    def fail(*args, **kwargs):
        raise OSError("disk full")

    model = load_model(checkpoint)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner.Accumulators, "metrics", fail)  # every image scored, then a failure
        with pytest.raises(OSError, match="disk full"):
            evaluate(model, open_dataset(dataset_root, "test"), out, EvalSettings(threads=1, cam_threshold=0.6,
                     cam_curve_interval=0.1, thumbnails=6), progress=False, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # no staged thumbnails left
    results = evaluate(model, open_dataset(dataset_root, "test"), out,
                       EvalSettings(threads=1, limit=2, thumbnails=0, cam_curve_interval=0.1), progress=False,
                       overwrite=True)
    assert set(results.thumbnails().values()) == set((out / "thumbnails").iterdir())  # no earlier run's left


def damaged_dataset(root: Path) -> tuple[Path, list[str]]:
    """The tiny dataset with two test images whose headers read but whose pixel data is cut short."""
    write_dataset(root)
    damaged = ["images/c1/img_2.png", "images/c3/img_4.png"]
    png, jpeg = encode(noise(48, 40, seed=2), "PNG"), encode(noise(48, 40, seed=4), "JPEG")
    for relative, data in zip(damaged, (png[: len(png) // 2], jpeg[: len(jpeg) // 2]), strict=True):
        (root / relative).write_bytes(data)  # a JPEG under a .png name: PIL reads the content, not the name
    return root, damaged


def cli(root: Path, out: Path, checkpoint: Path, *arguments: str) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--dataset", str(root), "--out", str(out), "--threads", "1",
            "--device", "cpu", "--cam-curve-interval", "0.1", "--batch-size", "2", *arguments]


@pytest.mark.parametrize("workers", ["0", "1"])
def test_damaged_pixel_data_is_skipped_and_listed_with_on_error_skip(tmp_path, checkpoint, workers):
    root, damaged = damaged_dataset(tmp_path / "cub")
    out = tmp_path / "out"
    assert main(cli(root, out, checkpoint, "--on-error", "skip", "--workers", workers)) == 0
    results = load_results(out)
    listed = results.summary["dataset"]["skipped"]
    assert [entry["file"] for entry in listed] == damaged
    assert all(entry["line"] is None and "image data is damaged or truncated" in entry["reason"] for entry in listed)
    assert results.summary["dataset"]["skipped_images"] == 2 and results.summary["dataset"]["num_images"] == 4
    assert set(results.per_image["image_path"]).isdisjoint(damaged) and len(results.per_image) == 4
    assert not (out / PARTIAL_THUMBNAIL_DIR).exists()


@pytest.mark.parametrize("workers", ["0", "1"])
def test_damaged_pixel_data_stops_a_strict_run_with_one_line(tmp_path, checkpoint, capsys, workers):
    """In a data-loader worker or in this process alike: the file's one-line error, no traceback,
    no staged thumbnails, no results."""
    root, damaged = damaged_dataset(tmp_path / "cub")
    out = tmp_path / "out"
    assert main(cli(root, out, checkpoint, "--workers", workers)) == 2
    printed = capsys.readouterr().err
    errors = [line for line in printed.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and damaged[0] in errors[0] and "image data is damaged or truncated" in errors[0]
    assert "Traceback" not in printed and not (out / PARTIAL_THUMBNAIL_DIR).exists()
    assert not (out / "summary.json").exists()


def test_annotation_skips_are_listed_beside_image_skips(tmp_path, checkpoint):
    root, damaged = damaged_dataset(tmp_path / "cub")
    with open(root / "bounding_boxes.txt", "a") as boxes:
        boxes.write("3 oops\n")  # image 3's second box line is unreadable
    results = evaluate(load_model(checkpoint), open_dataset(root, "test", on_error="skip"), tmp_path / "out",
                       EvalSettings(threads=1, cam_curve_interval=0.1), progress=False)
    listed = results.summary["dataset"]["skipped"]
    assert listed[0]["file"] == "bounding_boxes.txt" and listed[0]["line"] == len(
        (root / "bounding_boxes.txt").read_text().splitlines())
    assert [entry["file"] for entry in listed[1:]] == damaged
    assert results.summary["dataset"]["skipped_annotations"] == 1


def test_a_split_of_nothing_but_damaged_images_is_refused(tmp_path, checkpoint):
    root, damaged = damaged_dataset(tmp_path / "cub")
    dataset = open_dataset(root, "test", on_error="skip")
    dataset = dataclasses.replace(dataset, samples=[s for s in dataset.samples if str(s.path).endswith(tuple(damaged))])
    with pytest.raises(DatasetError, match="no image of the test split could be decoded"):
        evaluate(load_model(checkpoint), dataset, tmp_path / "out", EvalSettings(threads=1), progress=False)
    assert not (tmp_path / "out" / PARTIAL_THUMBNAIL_DIR).exists()


@pytest.mark.parametrize("arguments, problem", [
    (["--batch-size", "0"], "batch_size must be at least 1"),
    (["--batch-size", "-3"], "batch_size must be at least 1"),
    (["--limit", "-1"], "limit must be 0 or more"),
    (["--threshold", "15"], "cam_threshold must be within [0, 1)"),
    (["--iou-threshold", "0"], "iou_threshold must be within (0, 1]"),
    (["--cam-curve-interval", "0"], "cam_curve_interval must be within (0, 1]"),
    (["--thumbnails", "-1"], "thumbnails must be 0 or more"),
    (["--device", "nonsense"], "is not a torch device"),
])
def test_out_of_range_arguments_are_refused_by_name(tmp_path, dataset_root, checkpoint, capsys, arguments, problem):
    out = tmp_path / "out"
    code = main(["--checkpoint", str(checkpoint), "--dataset", str(dataset_root), "--out", str(out),
                 "--workers", "0", *arguments])
    assert code == 2 and problem in capsys.readouterr().err
    assert not (out / "summary.json").exists()


def test_a_cuda_device_on_a_machine_without_one_is_named(monkeypatch, tmp_path, dataset_root, checkpoint, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["--checkpoint", str(checkpoint), "--dataset", str(dataset_root), "--out", str(tmp_path / "out"),
                 "--device", "cuda"])
    assert code == 2 and "CUDA is not available" in capsys.readouterr().err


def test_layer_argument_parsing():
    assert parse_layers("all") == "all" and parse_layers("last:3") == "last:3"
    assert parse_layers("0,3,5") == (0, 3, 5) and parse_layers("-1,") == (-1,)
    # A bare number could mean the first k blocks or block k: the error says how to write either.
    for bare in ("2", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"write first:{bare} .* or {bare}, for block {bare} alone"):
            parse_layers(bare)
    with pytest.raises(argparse.ArgumentTypeError, match="not a list of block indices"):
        parse_layers("1,x")


def test_command_line_errors_name_the_problem(tmp_path, dataset_root, capsys):
    code = main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--dataset", str(dataset_root),
                 "--out", str(tmp_path / "out")])
    assert code == 2 and "no checkpoint file" in capsys.readouterr().err


def test_command_line_end_to_end(tmp_path, dataset_root, checkpoint):
    out = tmp_path / "results" / "cli"
    completed = subprocess.run(
        [sys.executable, "-m", "tscam_core.evaluate", "--checkpoint", str(checkpoint), "--dataset", str(dataset_root),
         "--split", "test", "--out", str(out), "--batch-size", "2", "--workers", "0", "--threads", "1",
         "--device", "cpu", "--limit", "4", "--layers", "first:1", "--cam-curve-interval", "0.1"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )
    assert completed.returncode == 0, completed.stderr
    assert "GT-known Loc" in completed.stdout and "PxAP" in completed.stdout
    results = load_results(out)
    assert len(results.per_image) == 4 and results.summary["settings"]["layers"] == "first:1"
    assert results.metrics["layer_count"]["gt_known"][0] == pytest.approx(results.metrics["gt_known_loc"])
    # No --threshold and a checkpoint that records none: the paper's, and the run says so.
    assert "CAM threshold 0.1: the paper's (the checkpoint records none of its own)" in completed.stderr
    assert results.summary["settings"]["cam_threshold"] == 0.1


def test_without_a_threshold_the_checkpoints_validated_one_is_used(tmp_path, dataset_root):
    """The README's command scores what the demo and the dashboard show: the threshold training chose
    on its validation images, not the paper's 0.1; --threshold still wins."""
    info = dataclasses.replace(tiny_info(), evaluation={"validation": {"best_threshold": 0.35}},
                               recipe={"threshold": 0.2})
    checkpoint = save_checkpoint(make_tiny_model(seed=3), info, tmp_path / "validated.safetensors")
    common = ["--checkpoint", str(checkpoint), "--dataset", str(dataset_root), "--split", "test", "--workers", "0",
              "--threads", "1", "--limit", "2", "--cam-curve-interval", "0.1", "--thumbnails", "0"]
    for extra, expected, why in (([], 0.35, "the checkpoint's, chosen on its validation images"),
                                 (["--threshold", "0.25"], 0.25, "given with --threshold")):
        out = tmp_path / f"out{expected}"
        completed = subprocess.run([sys.executable, "-m", "tscam_core.evaluate", *common, "--out", str(out), *extra],
                                   cwd=REPO, capture_output=True, text=True, timeout=120,
                                   env={"OMP_NUM_THREADS": "1", "PATH": ""})
        assert completed.returncode == 0, completed.stderr
        assert f"CAM threshold {expected:g}: {why}" in completed.stderr
        assert load_results(out).summary["settings"]["cam_threshold"] == expected


def test_signed_class_maps_score_the_official_maps(run, tmp_path):
    """--signed-class-maps: every box comes from A* x the signed S_c, as in Eq. 7 and the official code."""
    model, dataset, rectified = run
    settings = EvalSettings(batch_size=4, threads=1, thumbnails=0, cam_curve_interval=0.05,
                            map=MapSpec(signed=True))
    signed = evaluate(model, dataset, tmp_path / "signed", settings, progress=False)
    assert signed.summary["settings"]["signed_class_maps"] and not rectified.summary["settings"]["signed_class_maps"]
    preprocess = model.info.transform
    for index, row in signed.per_image.iterrows():
        image, sample = dataset.load(index)
        found = localize(explain_images(model, [image]), sample.label, preprocess.input_size, threshold=0.1,
                         spec=MapSpec(signed=True))
        _, gts = preprocess.geometry(image, sample.boxes)
        assert row["gt_known_iou"] == pytest.approx(float(box_iou(found.box, gts).max()), abs=1e-6)
    # The tiny model's S_c has negative evidence somewhere: the two conventions give other boxes.
    assert (signed.per_image["gt_known_iou"] != rectified.per_image["gt_known_iou"]).any()


def test_results_document_shows_the_measured_numbers(run, tmp_path):
    """docs/results.md's tables (tscam_core.report.tables) render the run's own numbers next to the paper's."""
    from tscam_core.report import tables

    model, _, results = run
    metrics = results.metrics
    text = "\n".join([*tables.main_table(results), *tables.layer_table(results), *tables.error_table(results),
                      *tables.iou_table(results, tmp_path / "figures" / "fig7.png", tmp_path / "results.md"),
                      *tables.choe_table(results)])
    assert f"| GT-known Loc | {100 * metrics['gt_known_loc']:.1f} [" in text and "| 87.7 |" in text
    assert "![Localization accuracy vs IoU threshold](figures/fig7.png)" in text
    errors = metrics["error_analysis"]
    assert f"| measured (TS-CAM) | {100 * errors['cls']:.2f} [" in text
    for k in range(1, model.depth + 1):
        assert f"| {k} | {100 * metrics['layer_count']['top1'][k - 1]:.1f} |" in text
    assert f"| PxAP | {100 * metrics['pxap']:.1f} |" in text


def test_curve_off_the_maxboxacc_grid_equals_the_box_by_box_protocol(tmp_path, dataset_root, checkpoint):
    """One contour sweep per image serves MaxBoxAccV2 and the CAM-threshold curve, even where the
    curve's thresholds (0.03, 0.06, ...) are not on the sweep's grid (0.05, 0.10, ...)."""
    model = load_model(checkpoint)
    dataset = open_dataset(dataset_root, "test")
    settings = EvalSettings(batch_size=4, threads=2, thumbnails=0, cam_curve_interval=0.05,
                            threshold_curve_interval=0.03)
    metrics = evaluate(model, dataset, tmp_path / "grid", settings, progress=False).metrics
    curve = metrics["loc_vs_cam_threshold"]
    sweep = cam_thresholds(0.05)
    preprocess = model.info.transform
    located = np.zeros(len(curve["cam_thresholds"]))
    best = np.zeros((len(dataset), len(sweep)))
    for index in range(len(dataset)):
        image, sample = dataset.load(index)
        map01 = localize(explain_images(model, [image]), sample.label, preprocess.input_size, 0.1).map01
        _, gts = preprocess.geometry(image, sample.boxes)
        for j, threshold in enumerate(curve["cam_thresholds"]):
            located[j] += box_iou(box_from_map(map01, threshold), gts).max() >= 0.5
        for j, threshold in enumerate(sweep):
            scored = maxboxacc_boxes(boxes_from_map(map01, float(threshold)), map01.shape)
            best[index, j] = max(box_iou(box, gts).max() for box in scored)
    np.testing.assert_allclose(curve["gt_known"], located / len(dataset))
    for delta, key in ((0.3, "iou_30"), (0.5, "iou_50"), (0.7, "iou_70")):
        assert metrics["maxboxacc_v2"][key] == pytest.approx((best >= delta).mean(axis=0).max())


def expected_thumbnails(model, dataset, settings: EvalSettings) -> dict[str, np.ndarray]:
    """Each image's thumbnail drawn the plain way: the top-1 class's map (``upsample_map``) over the
    input image (``overlay``), GT boxes green and that map's ``box_from_map`` red, shrunk to the
    thumbnail size. The model runs on the evaluation's batches, so the maps are the same tensors."""
    preprocess, size = model.info.transform, model.info.transform.input_size
    items = TorchWSOL(dataset, preprocess)
    pictures = {}
    for start in range(0, len(dataset), settings.batch_size):
        batch = collate([items[i] for i in range(start, min(start + settings.batch_size, len(dataset)))])
        explanation = model.explain(batch["image"])
        top = explanation.maps(settings.map, explanation.top_classes(1)[1])
        for i, index in enumerate(batch["index"].tolist()):
            image, sample = dataset.load(index)
            top01 = upsample_map(top[i, 0], size)
            input_image, gts = preprocess.geometry(image, sample.boxes)
            pred_box = box_from_map(top01, settings.cam_threshold)
            side = min(settings.thumbnail_size, max(size))  # shrunk to the thumbnail size, never enlarged
            small, drawn = resize(input_image, np.concatenate([gts, pred_box[None]]), (side, side))
            pictures[sample.image_id] = np.asarray(overlay(
                small, top01, [DrawnBox(b, GT_COLOR) for b in drawn[:-1]] + [DrawnBox(drawn[-1], PRED_COLOR)]))
    return pictures


@pytest.mark.parametrize("settings", [
    EvalSettings(batch_size=4, threads=2, thumbnails=2, cam_curve_interval=0.05),
    EvalSettings(batch_size=5, threads=3, thumbnails=0, cam_curve_interval=0.02, threshold_curve_interval=0.03,
                 cam_threshold=0.3, map=MapSpec("tscam", "first:1"), loader_workers=1),
    EvalSettings(batch_size=3, threads=1, thumbnails=6, map=MapSpec("trans_cam"), cam_curve_interval=0.1,
                 thumbnail_size=20, graph=False),
    EvalSettings(batch_size=4, threads=2, pool="process", thumbnails=3, cam_curve_interval=0.05),
    EvalSettings(batch_size=4, threads=2, thumbnails=2, cam_curve_interval=0.05, box_convention="half_open"),
], ids=["default", "layers-1-processes", "trans-cam-eager", "process-pool", "half-open"])
def test_batched_scoring_equals_the_reference_scorer(tmp_path, dataset_root, checkpoint, settings, monkeypatch):
    """The whole evaluation with the batched backend (the default) gives the table, summary and
    thumbnails of the same run through the library's reference scorer (one map and one threshold
    at a time), whatever the batch slicing, thread count, pool kind (a process pool decodes the
    thumbnails' pictures again) or loader, with the model run as a traced graph or eagerly."""
    model, dataset = load_model(checkpoint), open_dataset(dataset_root, "test")
    batched = evaluate(model, dataset, tmp_path / "batched", settings, progress=False)
    monkeypatch.setattr(scoring, "BACKEND", "reference")
    reference = evaluate(model, dataset, tmp_path / "reference", settings, progress=False)
    pd.testing.assert_frame_equal(batched.per_image, reference.per_image, check_exact=True)
    assert batched.metrics == reference.metrics
    assert batched.thumbnails().keys() == reference.thumbnails().keys()
    table = batched.per_image
    assert table["thumbnail"].notna().sum() >= (table["error_type"] != "correct").sum()
    pictures = expected_thumbnails(model, dataset, settings)
    for image_id, path in batched.thumbnails().items():
        with Image.open(path) as thumbnail, Image.open(reference.thumbnails()[image_id]) as again:
            np.testing.assert_array_equal(np.asarray(thumbnail.convert("RGB")), pictures[image_id])
            np.testing.assert_array_equal(np.asarray(again.convert("RGB")), pictures[image_id])


def test_the_backends_give_equal_records_on_hard_maps():
    """Map by map: constant, hollow and many-region maps, no GT box, two GT boxes, a mask or none,
    the top-1 class the GT class or not, named maps of their own and the main map's alias."""
    rng = np.random.default_rng(5)
    hollow = np.ones((8, 8), np.float32)
    hollow[2:6, 2:6] = 0
    maps = [rng.random((4, 8, 8), dtype=np.float32) for _ in range(5)]
    maps[1][0] = 0.5  # constant
    maps[2][0] = hollow
    maps[3][0] = np.kron(rng.random((4, 4)) > 0.5, np.ones((2, 2))).astype(np.float32)
    for i in (1, 3):  # the top-1 class is the GT class: its map is the GT class's
        maps[i][1] = maps[i][0]
    boxes = [np.array([[2, 2, 20, 20]]), np.zeros((0, 4)), np.array([[0, 0, 31, 31], [10, 4, 12, 30]]),
             np.array([[5, 5, 9, 9]]), np.array([[8, 0, 31, 16]])]
    images = [scoring.ImageMaps(cams, label, [label if i % 2 else (label + 1) % 4, 2], gts,
                                rng.random((32, 32)) > 0.5 if i != 3 else None)
              for i, (cams, gts, label) in enumerate(zip(maps, boxes, (0, 1, 2, 3, 1), strict=True))]
    for convention in ("inclusive", "half_open"):
        protocol = scoring.Protocol((32, 32), 0.3, 0.5, convention, cam_thresholds(0.05), cam_thresholds(0.15),
                                    ("tscam", "trans_cam", "layers_1", "layers_2"), ("tscam", "layers_2"))
        batched = scoring.score_images(images, protocol)
        reference = scoring.score_images(images, protocol, backend="reference")
        for got, expected in zip(batched, reference, strict=True):
            for name, value in vars(expected).items():
                other = getattr(got, name)
                if isinstance(value, np.ndarray) or (isinstance(value, tuple) and value and isinstance(value[0], np.ndarray)):
                    np.testing.assert_array_equal(np.asarray(other), np.asarray(value), err_msg=name)
                else:
                    assert other == value, name
    with pytest.raises(ValueError, match="backend must be 'batched' or 'reference', got 'fast'"):
        scoring.score_images(images, protocol, backend="fast")


@pytest.mark.parametrize(("cores", "platform", "expected"), [
    (2, "linux", ScoringPool("thread", 2)),
    (6, "linux", ScoringPool("thread", 4)),
    (16, "linux", ScoringPool("process", 15)),
    (16, "darwin", ScoringPool("thread", 4)),  # no fork there: spawned workers would each import torch
])
def test_auto_pool_is_a_few_threads_or_forked_processes_from_8_cores(monkeypatch, cores, platform, expected):
    monkeypatch.setattr(settings_module, "usable_cores", lambda: cores)
    monkeypatch.setattr(settings_module.sys, "platform", platform)
    settings = EvalSettings()
    assert settings.scoring == expected
    assert (settings.record()["pool"], settings.record()["threads"]) == (expected.kind, expected.workers)
    assert EvalSettings(threads=3).scoring.workers == 3
    assert EvalSettings(pool="thread").scoring.kind == "thread"


def test_the_defaults_are_the_reference_codes_and_recorded():
    settings = EvalSettings()
    assert (settings.box_convention, settings.cam_curve_interval, settings.iou_threshold) == ("inclusive", 0.001, 0.5)
    assert settings.record()["box_convention"] == "inclusive" and settings.record()["cam_curve_interval"] == 0.001
    assert EvalSettings(box_convention="half_open").record()["box_convention"] == "half_open"
    with pytest.raises(ValueError, match="box_convention must be one of inclusive, half_open, got 'pixels'"):
        EvalSettings(box_convention="pixels")


def test_an_unknown_pool_kind_is_named():
    with pytest.raises(ValueError, match="pool must be 'auto', 'thread' or 'process', got 'fibers'"):
        EvalSettings(pool="fibers")
