"""Training: exact resume, the resume state format, the step function, the CLI's help and errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import timm
import torch

from train.run import build_parser, main
from tscam_core.checkpoint import read_checkpoint
from tscam_core.recipes import PRESETS, TrainConfig, preset_config
from tscam_core.testing.tiny_training import FIXTURE, cli_args, make_dataset, tiny_config, weights
from tscam_core.training import STATE_FILE, load_state_file, lr_factor, train, train_step


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "fashion")


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    config = tiny_config(dataset, tmp_path_factory.mktemp("runs"), "straight", pretrain_epochs=1, pretrain_size=16,
                         pretrain_images=40, pretrain_source=str(FIXTURE))
    return config, train(config)


def test_resume_mid_epoch_equals_uninterrupted_bitwise(dataset, uninterrupted, tmp_path):
    """Stop after 3 steps (inside the plain-classification stage), then after 8 (inside the first TS-CAM
    epoch), resume: identical weights, bit for bit.

    Exercises every source of state: drop-path randomness (torch RNG), random crops and flips
    (seeded per epoch and image), AdamW moments, the cosine schedule, the data order and the
    switch from the first stage to the second (5 steps per epoch in both).
    """
    config, straight_dir = uninterrupted
    stopped = dataclasses.replace(config, output=str(tmp_path), name="stopped", max_steps=3)
    run_dir = train(stopped)
    state = load_state_file(run_dir / STATE_FILE)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 3, 3)
    assert not (run_dir / "last.safetensors").exists()  # no epoch finished yet

    stopped_again = dataclasses.replace(stopped, max_steps=8)  # into the second epoch, then stop again
    train(stopped_again, resume=run_dir)
    state = load_state_file(run_dir / STATE_FILE)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 3, 8)

    train(dataclasses.replace(stopped, max_steps=0), resume=run_dir)
    expected = weights(straight_dir / "last.safetensors")
    resumed = weights(run_dir / "last.safetensors")
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    straight = [json.loads(line) for line in (straight_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4]
    assert [line["stage"] for line in lines] == ["plain classification"] + ["TS-CAM"] * 3
    for line, other in zip(lines, straight, strict=True):  # the same log too, the epoch cut by the stop included
        assert {k: v for k, v in line.items() if k != "images_per_s"} == {
            k: v for k, v in other.items() if k != "images_per_s"}


def test_run_folder_holds_config_metrics_checkpoints_and_a_weights_only_state(uninterrupted):
    config, run_dir = uninterrupted
    saved = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    assert saved == config
    state = torch.load(run_dir / STATE_FILE, weights_only=True)  # no pickled code anywhere in it
    assert state["epoch"] == 1 + config.epochs and state["global_step"] == 20
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "rng", "data_order"}
    assert state["scheduler"]["last_epoch"] == 15
    info, tensors = read_checkpoint(run_dir / "best.safetensors")
    assert info.num_classes == 10 and info.class_names[0] == "T-shirt/top"
    assert info.preprocess["input_size"] == [32, 32]
    assert {"top1_cls", "gt_known_loc", "best_threshold"} <= set(info.evaluation["validation"])
    assert info.recipe["lr"] == config.lr and "head.weight" in tensors
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(0 <= r["val_gt_known_loc"] <= 1 for r in records)
    assert all(r["val_images"] == 8 for r in records)


def test_train_step_moves_a_plain_timm_classifier_and_reports_the_batch():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=3, img_size=32, patch_size=8, depth=1, embed_dim=48,
                              num_heads=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    before = [p.detach().clone() for p in model.parameters()]
    losses = [train_step(model, images, labels, optimizer).loss for _ in range(5)]
    result = train_step(model, images, labels, optimizer)
    assert result.count == 6 and 0 <= result.correct <= 6
    assert losses[-1] < losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_lr_schedule_warms_up_then_follows_the_cosine_to_its_floor():
    factors = [lr_factor(step, 100, 10, "cosine", 0.1) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[99] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert lr_factor(50, 100, 0, "constant", 0.0) == 1.0


def test_paper_presets_follow_section_4_1():
    for name, epochs, lr, batch in (("cub", 60, 5e-5, 128), ("ilsvrc", 12, 5e-4, 256)):
        config = preset_config(name)
        assert (config.epochs, config.lr, config.batch_size) == (epochs, lr, batch)
        assert (config.eps, config.beta1, config.beta2, config.weight_decay) == (1e-8, 0.9, 0.99, 5e-4)
        assert (config.resize, config.crop, config.test_resize, config.hflip) == (256, 224, 224, True)
        assert config.arch == "deit_small_patch16_224" and config.pretrained
    assert preset_config("fashion", lr=2e-3).lr == 2e-3


def test_help_documents_every_field(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    options = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig) if f.name != "preset"}
    missing = sorted(option for option in options if option not in text)
    assert not missing, missing
    assert "--preset" in text and "--resume" in text
    for name in PRESETS:
        assert f"{name}:" in text  # each preset's own values are shown next to the defaults


def test_every_field_can_be_set_from_the_command_line(dataset, tmp_path):
    args = build_parser().parse_args(["--preset", "fashion", "--lr", "0.5", "--no-hflip", "--amp", "fp16",
                                      "--val-thresholds", "0.1,0.3", "--depth", "3"])
    from train.run import resolve

    config = resolve(args)
    assert (config.lr, config.hflip, config.amp, config.depth, config.thresholds()) == (0.5, False, "fp16", 3, [0.1, 0.3])
    assert config.epochs == PRESETS["fashion"]["epochs"]


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    code = main(["--data", str(tmp_path / "nowhere"), "--no-pretrained", "--output", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "does not exist" in err
    assert not any(tmp_path.iterdir())  # no run folder is left behind


def test_unknown_preset_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--preset", "imagenet21k"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'imagenet21k'" in capsys.readouterr().err


def test_offline_imagenet_weights_say_how_to_continue(dataset, tmp_path, monkeypatch, capsys):
    """Offline with an empty cache. huggingface_hub read HF_HUB_OFFLINE and its cache folder when it was
    imported, so its constants are set, not the environment: the lookup must fail without the network."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    assert huggingface_hub.constants.is_offline_mode()  # what its HTTP layer asks before every request
    code = main(["--preset", "cub", "--data", str(dataset), "--output", str(tmp_path), "--workers", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "deit_small_patch16_224" in err and "--pretrained-file" in err
    assert "LocalEntryNotFoundError" in err  # not in the empty cache, and not fetched
    missing = main(["--preset", "cub", "--data", str(dataset), "--pretrained-file", str(tmp_path / "deit.pth"),
                    "--output", str(tmp_path)])
    assert missing == 2 and "deit.pth" in capsys.readouterr().err


def test_pretrained_weights_of_another_width_or_truncated_are_named(tmp_path, capsys):
    data = make_dataset(tmp_path / "fashion")
    wide = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=4)
    other = tmp_path / "vit64.pth"
    torch.save(wide.state_dict(), other)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(other.read_bytes()[:5000])
    for path in (other, truncated):
        config = tiny_config(data, tmp_path / "runs", path.stem, pretrained_file=str(path))
        assert main(cli_args(config)) == 2
        err = capsys.readouterr().err
        assert str(path) in err and "--pretrained-file" in err
    assert not (tmp_path / "runs").exists()


def test_a_run_folder_is_never_overwritten(dataset, uninterrupted, capsys):
    config, run_dir = uninterrupted
    with pytest.raises(ValueError, match="already holds a run"):
        train(config)


def test_a_generated_benchmark_of_other_sizes_is_refused(dataset, tmp_path, capsys):
    code = main(["--preset", "fashion", "--data", str(dataset), "--output", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "differs from the one asked for" in err and "train 48 (want 60000)" in err


def test_demo_examples_are_test_images_of_distinct_classes_with_their_boxes(dataset, tmp_path):
    from train.make_examples import make_examples
    from tscam_core.datasets import open_dataset

    entries = make_examples(dataset, tmp_path / "examples", 4)
    listed = json.loads((tmp_path / "examples" / "examples.json").read_text())["examples"]
    assert listed == entries and len({e["class_index"] for e in entries}) == 4
    test = {str(s.path.relative_to(dataset)): s for s in open_dataset(dataset, "test")}
    for entry in entries:
        sample = test[entry["source"]]  # from the test split, never train
        assert entry["boxes"] == sample.boxes.tolist() and entry["class_index"] == sample.label
        assert (tmp_path / "examples" / entry["file"]).read_bytes() == sample.path.read_bytes()


def test_best_is_the_epoch_of_best_swept_top1_loc_and_resume_validates_it_afresh(uninterrupted, tmp_path):
    """best.safetensors holds the localization epoch with the best Top-1 Loc at its own best threshold;
    resuming a finished run validates that checkpoint again (its stored record is not trusted) and
    re-exports it."""
    import shutil

    from tscam_core.checkpoint import save_checkpoint
    from tscam_core.loading import load_model

    config, run_dir = uninterrupted
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    localization = [r for r in records if r["stage"] == "TS-CAM"]
    chosen = max(localization, key=lambda r: r["val_top1_loc_best"])  # the first of equals, as training keeps it
    info, _ = read_checkpoint(run_dir / "best.safetensors")
    assert info.recipe["epochs_done"] == chosen["epoch"]
    assert info.evaluation["validation"]["top1_loc_best"] == chosen["val_top1_loc_best"]
    assert info.evaluation["validation"]["best_threshold"] == chosen["val_best_threshold"]

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    stale = load_model(copy / "best.safetensors")
    stale.info.evaluation = {"validation": {"best_threshold": 0.95, "top1_loc_best": 1.0}}
    save_checkpoint(stale, stale.info, copy / "best.safetensors")
    export = tmp_path / "exported.safetensors"
    train(dataclasses.replace(config, output=str(tmp_path), name="copy", export=str(export)), resume=copy)
    for path in (copy / "best.safetensors", export):
        refreshed, _ = read_checkpoint(path)
        assert refreshed.evaluation["validation"] == info.evaluation["validation"]


def test_fewer_training_images_than_a_batch_names_the_data(tmp_path, capsys):
    data = make_dataset(tmp_path / "fashion")
    config = tiny_config(data, tmp_path / "runs", "big-batch", batch_size=4096)
    assert main(cli_args(config)) == 2
    err = capsys.readouterr().err
    assert str(data) in err and "fewer than one batch of 4096" in err and "stage" in err
    assert not (tmp_path / "runs").exists()
