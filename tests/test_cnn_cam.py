"""CNN CAM (the CNN baseline of Table 5): the CAM formula, checkpoints and families, training and evaluation.

A tiny real timm ResNet-10-T (channel widths 8-64, output stride 8: a 4 x 4 map at 32 x 32) stands
in for the preset's half-width one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_model, tiny_info
from safetensors.torch import save_file

from tscam_core import (
    CNNCAM,
    TSCAM,
    CheckpointError,
    MapSpec,
    ModelInfo,
    Preprocess,
    build_model,
    explain_images,
    load_model,
    localize,
    read_checkpoint,
    save_checkpoint,
)
from tscam_core.checkpoint import METADATA_KEY
from tscam_core.datasets import open_dataset
from tscam_core.evaluate import EvalSettings, evaluate, main
from tscam_core.overlaps import box_iou
from tscam_core.recipes import PRESETS, preset_config
from tscam_core.results import load_results
from tscam_core.testing.tiny_training import make_dataset, tiny_config
from tscam_core.training import build_training_model, train

REPO = Path(__file__).resolve().parents[1]
TINY_CNN = {"channels": [8, 16, 32, 64], "stem_width": 8, "output_stride": 8}


def cnn_info(num_classes: int = 5) -> ModelInfo:
    return ModelInfo(arch="resnet10t", num_classes=num_classes, timm_kwargs=dict(TINY_CNN), family="cnn_cam",
                     preprocess=Preprocess((32, 32), (32, 32)).to_config())


def make_cnn(seed: int = 0, num_classes: int = 5) -> CNNCAM:
    torch.manual_seed(seed)
    model = build_model(cnn_info(num_classes)).eval()
    with torch.no_grad():  # a bias that differs per class, so the formula's "+ b_c" is checked too
        model.head.bias.normal_()
    return model


def test_maps_are_the_explicit_cam_formula_and_logits_their_mean():
    model = make_cnn()
    images = torch.randn(3, 3, 32, 32)
    explanation = model.explain(images)
    features = model.backbone.forward_features(images)  # B x K x h x w
    weights, bias = model.head.weight[:, :, 0, 0], model.head.bias  # C x K, C
    expected = torch.einsum("ck,bkhw->bchw", weights, features) + bias[None, :, None, None]
    assert explanation.semantic.shape == (3, 5, 4, 4)
    torch.testing.assert_close(explanation.semantic, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(explanation.logits, expected.mean(dim=(2, 3)), rtol=1e-4, atol=1e-4)
    # The classic CAM network: global average pooling, then the same weights as a linear layer.
    torch.testing.assert_close(explanation.logits, F.linear(features.mean(dim=(2, 3)), weights, bias),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model(images), explanation.logits, rtol=1e-5, atol=1e-5)


def test_explanation_has_only_the_cam_variant():
    explanation = make_cnn().explain(torch.randn(2, 3, 32, 32))
    assert explanation.layer_attention is None and explanation.depth == 0 and explanation.variants == ("cam",)
    classes = torch.tensor([[4, 1], [0, 0]])
    picked = explanation.maps(MapSpec("cam"), classes=classes)
    rectified = explanation.semantic.clamp(min=0)
    assert torch.equal(picked[0, 0], rectified[0, 4]) and torch.equal(picked[0, 1], rectified[0, 1])
    for variant in ("tscam", "trans_attention", "trans_cam"):
        with pytest.raises(ValueError, match=f"'{variant}' does not exist for a CNN CAM model"):
            explanation.maps(MapSpec(variant))
    with pytest.raises(ValueError, match="no attention"):
        explanation.attention()
    one = explanation.select(1)
    assert one.layer_attention is None and torch.equal(one.semantic[0], explanation.semantic[1])
    assert explanation.to("cpu").layer_attention is None
    # A TS-CAM explanation has no "cam" variant: its class maps alone are TransCAM.
    with pytest.raises(ValueError, match="'cam' does not exist for a TS-CAM model"):
        make_tiny_model().explain(torch.randn(1, 3, 32, 32)).maps(MapSpec("cam"))


def test_checkpoint_round_trip(tmp_path):
    model = make_cnn(seed=1)
    path = save_checkpoint(model, cnn_info(), tmp_path / "cnn.safetensors")
    info, _ = read_checkpoint(path)
    assert info.family == "cnn_cam" and info.timm_kwargs == TINY_CNN
    for family in ("cnn_cam", None):
        loaded = load_model(path, family=family)
        assert isinstance(loaded, CNNCAM)
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        images = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(loaded.explain(images).semantic, model.explain(images).semantic)


def test_a_checkpoint_of_the_other_family_is_refused(tmp_path):
    cnn_path = save_checkpoint(make_cnn(), cnn_info(), tmp_path / "cnn.safetensors")
    vit_path = save_checkpoint(make_tiny_model(), tiny_info(), tmp_path / "vit.safetensors")
    with pytest.raises(CheckpointError, match=r"is a CNN CAM checkpoint \(resnet10t\), but a TS-CAM model is needed"):
        load_model(cnn_path)  # the default: what the explorer, the app and the dashboard call
    with pytest.raises(CheckpointError, match="is a TS-CAM checkpoint .* but a CNN CAM model is needed"):
        load_model(vit_path, family="cnn_cam")
    with pytest.raises(CheckpointError, match="the metadata says TS-CAM but the model is CNN CAM"):
        save_checkpoint(make_cnn(), dataclasses.replace(cnn_info(), family="tscam"), tmp_path / "wrong.safetensors")
    with pytest.raises(CheckpointError, match="unknown model family 'rnn'"):
        dataclasses.replace(cnn_info(), family="rnn")


def test_a_checkpoint_without_family_loads_as_tscam(tmp_path):
    """Checkpoints written before CNN CAM existed have no family field."""
    model = make_tiny_model(seed=2)
    metadata = json.loads(tiny_info().to_json())
    del metadata["family"]
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={METADATA_KEY: json.dumps(metadata)})
    loaded = load_model(path)
    assert isinstance(loaded, TSCAM) and loaded.info.family == "tscam"


def test_fashion_cnn_preset_is_fashion_with_a_comparable_cnn():
    fashion, cnn = PRESETS["fashion"], PRESETS["fashion-cnn"]
    changed = {key for key in set(fashion) | set(cnn) if fashion.get(key) != cnn.get(key)}
    assert changed == {"model_family", "arch", "timm_extra", "img_size", "patch_size", "depth", "embed_dim",
                       "num_heads", "export"}
    assert not cnn["export"].startswith("checkpoints/")
    tscam = build_training_model(preset_config("fashion"), 10)
    baseline = build_training_model(preset_config("fashion-cnn"), 10)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert isinstance(baseline, CNNCAM) and abs(count(baseline) / count(tscam) - 1) < 0.05
    images = torch.randn(1, 3, 64, 64)
    assert baseline.eval().explain(images).semantic.shape[-2:] == tscam.eval().explain(images).semantic.shape[-2:]


def test_vit_options_with_a_cnn_are_refused(tmp_path):
    config = tiny_config(tmp_path, tmp_path, "x", model_family="cnn_cam", arch="resnet10t")
    with pytest.raises(ValueError, match="--img-size, --patch-size, --depth, --embed-dim, --num-heads: ViT options"):
        build_training_model(config, 5)
    with pytest.raises(ValueError, match="not valid JSON"):
        dataclasses.replace(config, img_size=0, patch_size=0, depth=0, embed_dim=0, num_heads=0,
                            timm_extra="{output_stride: 8}").timm_kwargs()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "fashion")


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """Two epochs of CNN CAM through the Trainer, validated each epoch and tested at the end."""
    config = tiny_config(dataset, tmp_path_factory.mktemp("runs"), "cnn", model_family="cnn_cam", arch="resnet10t",
                         img_size=0, patch_size=0, depth=0, embed_dim=0, num_heads=0, drop_path=0.0,
                         timm_extra=json.dumps(TINY_CNN), epochs=2, test_split="test")
    return train(config)


def test_training_validates_with_the_cam_and_saves_a_cnn_checkpoint(trained):
    lines = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [line["stage"] for line in lines] == ["CNN CAM", "CNN CAM"]
    for line in lines:
        assert line["val_images"] == 8 and 0.0 <= line["val_gt_known_loc"] <= 1.0
        assert len(line["val_gt_known_curve"]) == 19  # the CAM thresholds 0.05..0.95 the recipe sweeps
    info, _ = read_checkpoint(trained / "best.safetensors")
    assert info.family == "cnn_cam" and info.recipe["model_family"] == "cnn_cam"
    assert info.evaluation["test"]["images"] == 12
    assert isinstance(load_model(trained / "best.safetensors", family="cnn_cam"), CNNCAM)


def test_evaluation_scores_the_cam_only(trained, dataset, tmp_path, capsys):
    checkpoint = trained / "best.safetensors"
    out = tmp_path / "cnn-results"
    code = main(["--checkpoint", str(checkpoint), "--dataset", str(dataset), "--out", str(out), "--batch-size", "5",
                 "--workers", "0", "--threads", "1", "--cam-curve-interval", "0.1", "--thumbnails", "2"])
    assert code == 0, capsys.readouterr().err
    results = load_results(out)
    summary, metrics, table = results.summary, results.metrics, results.per_image
    assert summary["settings"]["variant"] == "cam" and summary["checkpoint"]["family"] == "cnn_cam"
    assert summary["checkpoint"]["depth"] == 0 and len(table) == 12
    assert list(metrics["variants"]) == ["cam"] and metrics["layer_count"]["counts"] == []
    assert metrics["variants"]["cam"] == {k: pytest.approx(metrics[k]) for k in ("top1_loc", "top5_loc", "gt_known_loc")}
    assert metrics["gt_known_loc"] == pytest.approx(table["gt_known"].mean())
    assert table["gt_known_cam"].tolist() == table["gt_known"].tolist()
    assert not [c for c in table.columns if c.startswith("gt_known_layers") or c == "gt_known_tscam"]
    assert 0.0 <= metrics["pxap"] <= 1.0  # the generated benchmark has masks
    # Each row is what the one-image path gives with the CAM.
    model, split = load_model(checkpoint, family=None), open_dataset(dataset, "test")
    preprocess = model.info.transform
    for index, row in table.head(4).iterrows():
        image, sample = split.load(index)
        found = localize(explain_images(model, [image]), sample.label, preprocess.input_size,
                         summary["settings"]["cam_threshold"], spec=MapSpec("cam"))
        _, gts = preprocess.geometry(image, sample.boxes)
        assert row["gt_known_iou"] == pytest.approx(float(box_iou(found.box, gts).max()), abs=1e-6)


def test_evaluation_refuses_settings_a_cnn_does_not_have(trained, dataset, tmp_path):
    model, split = load_model(trained / "best.safetensors", family=None), open_dataset(dataset, "test")
    with pytest.raises(ValueError, match=r"map variant 'tscam' does not exist for a CNN CAM model \(no attention\); choose one of cam"):
        evaluate(model, split, tmp_path / "a", EvalSettings(), progress=False)
    with pytest.raises(ValueError, match="no attention blocks"):
        evaluate(model, split, tmp_path / "b", EvalSettings(map=MapSpec("cam", "first:2")), progress=False)
    assert not np.any([(tmp_path / name).exists() for name in ("a", "b")])


def test_results_document_fills_the_cam_row(trained, dataset, tmp_path):
    """docs/results.md: Table 5's CAM row (and a Table 7 row) from the CNN's run, or 'not run'."""
    from tscam_core.report import tables
    from tscam_core.report.table5 import Evaluation, table5

    split = open_dataset(dataset, "test")
    settings = EvalSettings(threads=1, loader_workers=0, thumbnails=0, cam_curve_interval=0.1)
    tscam_model = make_tiny_model(num_classes=split.num_classes)
    tscam_model.info = tiny_info(num_classes=split.num_classes)
    tscam = evaluate(tscam_model, split, tmp_path / "tscam", settings, progress=False)
    cnn_model = load_model(trained / "best.safetensors", family="cnn_cam")
    cnn = evaluate(cnn_model, split, tmp_path / "cnn", dataclasses.replace(settings, map=MapSpec("cam")), progress=False)
    command = ["python", "-m", "tscam_core.evaluate", "--out", "x"]

    cnn_info_saved = read_checkpoint(trained / "best.safetensors")[0]
    assert "scm_blocks" in cnn_info_saved.recipe  # every run records SCM's settings; older recipes lack them
    older = {key: value for key, value in cnn_info_saved.recipe.items() if not key.startswith("scm_")}
    tscam_info = dataclasses.replace(tscam_model.info, recipe={**older, "epochs": 9, "arch": "vit"})
    main = Evaluation(tscam, command, 5678, tscam_info)
    cnn_run = Evaluation(cnn, ["python", "-m", "tscam_core.evaluate", "--out", "cnn"], 1234, cnn_info_saved)
    text = "\n".join([*table5(main, {}, cnn_run, [], "python scripts/make_results_doc.py"),
                      *tables.error_table(tscam, cnn)])
    cam, errors = cnn.metrics["variants"]["cam"], cnn.metrics["error_analysis"]
    assert (f"| CAM (CNN: resnet10t) | {100 * cam['top1_loc']:.1f} [" in text
            and f"| {100 * cam['gt_known_loc']:.1f} [" in text and "| 44.2 | 52.2 | 58 |" in text)
    assert "1,234 parameters against TS-CAM's 5,678" in text and "python -m tscam_core.evaluate --out cnn" in text
    # Only the training settings are compared, not the model's.
    assert "differs from the TS-CAM checkpoint's in: epochs 2 (TS-CAM: 9)." in text
    assert f"| measured (CAM, resnet10t) | {100 * errors['cls']:.2f} [" in text
    assert f"| TS-CAM | {100 * tscam.metrics['variants']['tscam']['top1_loc']:.1f} [" in text

    missing = "\n".join(table5(main, {}, None, [], "python scripts/make_results_doc.py"))
    assert "| CAM (CNN of comparable size) | not run |" in missing and "measured (CAM" not in missing
    assert "python train/run.py --preset fashion-cnn --name fashion-cnn" in missing
    assert "python scripts/make_results_doc.py --cnn-checkpoint runs/fashion-cnn/best.safetensors" in missing
