"""The presets' choices that the embedded benchmark's study (issue #17) rests on, on tiny real runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tscam_core.checkpoint import read_checkpoint
from tscam_core.cnn_cam import create_cnn_cam
from tscam_core.datasets.fashion import generate
from tscam_core.recipes import PRESETS, TrainConfig, preset_config
from tscam_core.testing.tiny_training import FIXTURE, TINY_BENCHMARK, tiny_config, weights
from tscam_core.training import (
    STATE_FILE,
    benchmark_config,
    build_training_model,
    load_state_file,
    make_optimizer,
    train,
)
from tscam_core.training.models import ClassTokenClassifier, stage_network


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The tiny benchmark with 8 validation images (split 'val')."""
    folder = tmp_path_factory.mktemp("data") / "fashion"
    generate(folder, dataclasses.replace(TINY_BENCHMARK, val=8), FIXTURE, progress=False)
    return folder


def recipe(data, output, name: str, **overrides) -> TrainConfig:
    """The fashion recipe's shape in small: a class-token first stage, then TS-CAM with a faster head,
    validated on the 'val' split."""
    return tiny_config(data, output, name, val_split="val", holdout=0, pretrain_epochs=1, pretrain_size=16,
                       pretrain_images=40, pretrain_source=str(FIXTURE), pretrain_head="token", lr=2e-4,
                       head_lr=2e-3, **overrides)


@pytest.fixture(scope="module")
def straight(dataset, tmp_path_factory):
    config = recipe(dataset, tmp_path_factory.mktemp("runs"), "straight")
    return config, train(config)


@pytest.mark.parametrize("name", PRESETS)
def test_validation_sweeps_the_whole_cam_threshold_range(name):
    # A map's best threshold can lie anywhere: signed S_c scored best at 0.55, past the old sweep's 0.5.
    assert preset_config(name).thresholds() == [round(0.05 * k, 2) for k in range(1, 20)]


def test_the_fashion_preset_in_small_validates_on_val_and_tests_once(tmp_path):
    # The preset as it is, but for its sizes: it validates on the generated 'val' split (items no stage
    # trains on) and tests on the test split at the threshold chosen there.
    small = dict(data=str(tmp_path / "fashion"), generate_train=48, generate_test=12, generate_val=8, depth=1,
                 embed_dim=32, num_heads=2, pretrain_size=16, pretrain_images=40, pretrain_source=str(FIXTURE),
                 batch_size=8, epochs=1,
                 pretrain_epochs=1, export="", output=str(tmp_path / "runs"), name="fashion", progress=False)
    config = preset_config("fashion", **small)
    generate(config.data, benchmark_config(config), FIXTURE, progress=False)
    info, _ = read_checkpoint(train(config) / "best.safetensors")
    validation, test = info.evaluation["validation"], info.evaluation["test"]
    assert (validation["split"], validation["images"]) == ("val", 8)
    assert (test["split"], test["images"], test["threshold"]) == ("test", 12, validation["best_threshold"])
    # Every map is scored on the validation images, so a viewer can open on the one that localizes best.
    assert set(validation["maps"]) == {"tscam", "trans_attention", "trans_cam"}
    assert validation["maps"]["tscam"]["best_threshold"] == validation["best_threshold"]
    assert validation["maps"]["tscam"]["gt_known_loc_best"] == validation["gt_known_loc_best"]
    spec, threshold, why = info.best_map()
    best = max(validation["maps"].values(), key=lambda scores: scores["gt_known_loc_best"])
    assert validation["maps"][spec.variant] == best and threshold == best["best_threshold"]
    assert "validation images" in why


def test_the_first_stage_trains_a_class_token_classifier_and_leaves_the_conv_head(dataset, tmp_path):
    # 5 steps of the plain stage: the class-token head and the backbone move, TS-CAM's head (unused) does not.
    config = recipe(dataset, tmp_path, "stage1", max_steps=5)
    run_dir = train(config)
    state = load_state_file(run_dir / STATE_FILE)
    torch.manual_seed(config.seed)
    initial = build_training_model(config, 10)
    head = ClassTokenClassifier(initial, 10).head
    assert not torch.equal(state["class_token_head"]["weight"], head.weight)
    assert torch.equal(state["model"]["head.weight"], initial.head.weight)
    assert not torch.equal(state["model"]["cls_token"], initial.cls_token)


def test_resume_inside_the_class_token_stage_equals_the_uninterrupted_run(dataset, straight, tmp_path):
    # Stop after 3 steps (inside the class-token stage), resume to the end: the same weights, bit for bit,
    # so the stage's head and the per-group rates of the TS-CAM stage are all in the resume state.
    config, straight_dir = straight
    stopped = dataclasses.replace(config, output=str(tmp_path), name="stopped", max_steps=3)
    run_dir = train(stopped)
    train(dataclasses.replace(stopped, max_steps=0), resume=run_dir)
    expected, resumed = weights(straight_dir / "last.safetensors"), weights(run_dir / "last.safetensors")
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key


def test_the_localization_stage_runs_its_head_faster_and_validates_on_val(straight):
    config, run_dir = straight
    state = load_state_file(run_dir / STATE_FILE)
    peaks = [group["initial_lr"] for group in state["optimizer"]["param_groups"]]
    assert peaks == [config.lr, config.lr, config.head_lr, config.head_lr]
    info, _ = read_checkpoint(run_dir / "best.safetensors")
    assert info.evaluation["validation"]["split"] == "val" and info.evaluation["validation"]["images"] == 8


def test_head_rate_reaches_only_the_head():
    config = recipe("unused", "unused", "groups")
    model = torch.nn.ModuleDict({"head": torch.nn.Linear(4, 2), "body": torch.nn.Linear(4, 4)})
    optimizer = make_optimizer(model, config, config.lr, config.head_lr)
    named = {id(p): name for name, p in model.named_parameters()}
    rates = {named[id(p)]: group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rates == {"head.weight": 2e-3, "head.bias": 2e-3, "body.weight": 2e-4, "body.bias": 2e-4}
    assert len(make_optimizer(model, config, config.lr).param_groups) == 2  # no head rate: the groups as before


def test_a_class_token_stage_needs_a_vit():
    config = preset_config("fashion-cnn", pretrain_head="token")
    model = create_cnn_cam("resnet10t", 10)
    with pytest.raises(ValueError, match="--pretrain-head token needs a ViT"):
        stage_network(config, model, 10)
