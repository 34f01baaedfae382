"""SCM (Bai et al., ECCV 2022) on TS-CAM: its blocks, training pass and map against explicit computations
of the definitions (tscam_core/scm.py), training through train/run.py, checkpoints and families, and
the options' errors.

Tiny real models on 32 x 48 inputs: a 4 x 6 token grid, so a map read with its sides swapped cannot
pass. The explicit computations run in float64 numpy, token by token where the definition is local.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_model, tiny_info
from safetensors.torch import save_file
from test_methods import CLASSES, GRID, assert_maps, gathered, hand_attention
from torch.utils.data import DataLoader

from train.run import main
from tscam_core import (
    CheckpointError,
    ModelInfo,
    build_model,
    load_model,
    methods,
    read_checkpoint,
    save_checkpoint,
)
from tscam_core.checkpoint import METADATA_KEY
from tscam_core.datasets import TorchWSOL, collate, open_dataset
from tscam_core.evaluate import Protocol, score_loader
from tscam_core.recipes import PRESETS, preset_config
from tscam_core.scm import SCM, ActivationDiffusionBlock, CalibrationSettings, newton_schulz_inverse
from tscam_core.testing.tiny_training import cli_args, make_dataset, tiny_config
from tscam_core.training import STATE_FILE, build_training_model, load_state_file

SETTINGS = {"blocks": 2, "lam": 0.8, "threshold": 0.4, "first_iterations": 16, "iterations": 4}


def scm_info(**settings) -> ModelInfo:
    return dataclasses.replace(tiny_info(), family="scm", scm=CalibrationSettings(**settings).to_dict())


def make_scm(seed: int = 0, **settings) -> SCM:
    torch.manual_seed(seed)
    return build_model(scm_info(**settings)).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 48)


def explicit_laplacian(height: int, width: int) -> np.ndarray:
    """D - A of the grid whose tokens (row by row) join their 4 neighbours, one token at a time."""
    laplacian = np.zeros((height * width, height * width))
    for row in range(height):
        for col in range(width):
            for r, c in ((row - 1, col), (row + 1, col), (row, col - 1), (row, col + 1)):
                if 0 <= r < height and 0 <= c < width:
                    laplacian[row * width + col, r * width + c] = -1.0
                    laplacian[row * width + col, row * width + col] += 1.0
    return laplacian


def explicit_adb(semantic: np.ndarray, fused: np.ndarray, lam: float, tau: float,
                 iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """One ADB by its definition, image by image: S B x C x h x w and F B x N in, the next pair out."""
    batch, classes, height, width = semantic.shape
    count = height * width
    laplacian = explicit_laplacian(height, width)
    next_semantic, next_fused = [], []
    for b in range(batch):
        vectors = semantic[b].reshape(classes, count).T  # a token's class scores per row
        norms = np.linalg.norm(vectors, axis=1)
        similarity = vectors @ vectors.T / np.outer(norms, norms)  # E = S S^T / ||S||
        system = laplacian * (lam * similarity - 1)  # M = (D - A) ∘ (λE - 1)
        inverse = 0.002 * system.T  # Newton-Schulz from α M^T
        for _ in range(iterations):
            inverse = inverse @ (2 * np.eye(count) - system @ inverse)
        spread = inverse.T @ fused[b]  # reallocate
        scaled = spread / (tau * fused[b].max())
        shrunk = scaled - np.tanh(scaled)  # tanhshrink
        filtered = (shrunk - shrunk.min()) / (shrunk.max() - shrunk.min())
        next_semantic.append(semantic[b] + semantic[b] * filtered.reshape(height, width))
        next_fused.append(fused[b] + filtered)
    return np.stack(next_semantic), np.stack(next_fused)


def explicit_semantic(model: SCM, images: torch.Tensor) -> np.ndarray:
    """S^0: the conv head over the patch-token map, B x C x h x w."""
    with torch.no_grad():
        tokens, grid = model.tokens(images)
        feature_map = tokens[:, 1:].transpose(1, 2).reshape(images.shape[0], -1, *grid)
        return F.conv2d(feature_map, model.head.weight, model.head.bias, padding=1).double().numpy()


def explicit_fused(model: SCM, images: torch.Tensor) -> np.ndarray:
    """F^0: each block's class-token attention to the patches, head mean, summed, min-max per image; B x N."""
    total = sum(attention[:, :, 0, 1:].mean(axis=1) for attention in hand_attention(model, images))
    low, high = total.min(axis=1, keepdims=True), total.max(axis=1, keepdims=True)
    return (total - low) / (high - low)


def test_an_adb_is_the_diffusion_of_its_definition():
    block = ActivationDiffusionBlock(lam=0.7, threshold=0.4, iterations=16)
    torch.manual_seed(0)
    semantic, fused = torch.randn(2, 5, 3, 5), torch.rand(2, 15)
    got_semantic, got_fused = block(semantic, fused)
    want_semantic, want_fused = explicit_adb(semantic.double().numpy(), fused.double().numpy(), 0.7, 0.4, 16)
    np.testing.assert_allclose(got_semantic.detach().numpy(), want_semantic, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_fused.detach().numpy(), want_fused, rtol=1e-4, atol=1e-4)
    assert np.ptp(want_fused - fused.numpy()) > 0.5  # the filter's output spans 0..1


def test_newton_schulz_approaches_the_inverse_of_the_weighted_laplacian():
    torch.manual_seed(2)
    vectors = F.normalize(torch.randn(1, 12, 5, dtype=torch.float64), dim=-1)
    system = torch.from_numpy(explicit_laplacian(3, 4)) * (0.5 * vectors @ vectors.transpose(1, 2) - 1)
    exact = torch.linalg.inv(system)
    assert torch.linalg.cond(system).item() < 100
    torch.testing.assert_close(newton_schulz_inverse(system, 40), exact)
    assert (newton_schulz_inverse(system, 4) - exact).abs().max() > 0.1  # 4 steps from α M^T: far from it


def test_training_logits_are_the_mean_of_the_calibrated_maps_and_inference_drops_the_module(images):
    model = make_scm(seed=3, **SETTINGS)
    semantic, fused = explicit_semantic(model, images), explicit_fused(model, images)
    for block, iterations in zip(model.calibration, (16, 4), strict=True):
        assert block.iterations == iterations
        semantic, fused = explicit_adb(semantic, fused, SETTINGS["lam"], SETTINGS["threshold"], iterations)
    model.train()
    got_semantic, got_fused = model.calibrated(images)
    assert got_semantic.shape == (2, 5, *GRID) and got_fused.shape == (2, *GRID)
    np.testing.assert_allclose(got_semantic.detach().numpy(), semantic, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(got_fused.detach().numpy().reshape(2, -1), fused, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(model(images), got_semantic.mean(dim=(2, 3)))
    model.eval()
    torch.testing.assert_close(model(images), model.explain(images).logits)
    assert not torch.allclose(model(images), got_semantic.mean(dim=(2, 3)), atol=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the blocks run in float32 under mixed precision
        mixed, _ = model.train().calibrated(images)
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()


def last_class_query_gradient(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """d loss / d q of the class token in the last block (its part of the qkv projection's output)."""
    kept: list[torch.Tensor] = []
    attn = model.blocks[-1].attn
    handle = attn.qkv.register_forward_hook(lambda _m, _i, out: kept.append(out))
    try:
        logits = model.train()(images)
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(F.cross_entropy(logits, CLASSES[:, 0]), kept)
    return gradient[:, 0, :attn.num_heads * attn.head_dim]


def test_the_loss_trains_the_class_token_attention_and_the_blocks_parameters(images):
    # TS-CAM's loss never reaches the last block's class-token query; SCM's does, through F^0.
    assert torch.count_nonzero(last_class_query_gradient(make_tiny_model(seed=3), images)) == 0
    model = make_scm(seed=3, **SETTINGS)
    assert torch.count_nonzero(last_class_query_gradient(model, images)) > 0
    loss = F.cross_entropy(model.train()(images), CLASSES[:, 0])
    loss.backward()
    for name in ("lam", "threshold"):
        assert all(getattr(block, name).grad.abs().item() > 0 for block in model.calibration), name


def test_the_scm_map_is_the_normalised_fused_attention_times_the_rectified_class_map(images):
    model = make_scm(seed=3, **SETTINGS)
    fused = explicit_fused(model, images).reshape(2, 1, *GRID)
    class_maps = gathered(explicit_semantic(model, images), CLASSES)
    assert_maps(methods.get("scm")(model, images, CLASSES), fused * np.maximum(class_maps, 0))
    # Not TS-CAM's coupling: min-max moves the least attended token to zero.
    assert not torch.allclose(methods.get("scm")(model, images, CLASSES), methods.get("tscam")(model, images, CLASSES))


def test_the_scm_map_is_offered_for_scm_models_only():
    names = [name for name in methods.names() if name != "cam"]
    assert [m.name for m in methods.available(make_scm())] == names
    assert "scm" not in [m.name for m in methods.available(make_tiny_model())]
    with pytest.raises(ValueError, match=r"method 'scm' needs a backbone trained through SCM's spatial calibration"):
        methods.get("scm")(make_tiny_model(), torch.zeros(1, 3, 32, 32), torch.tensor([[0]]))


def test_a_checkpoint_rebuilds_the_model_and_its_maps(tmp_path, images):
    model = make_scm(seed=4, **SETTINGS)
    with torch.no_grad():
        model.calibration[1].lam.fill_(1.3)  # as training leaves it: the file's value, not the setting's
    path = save_checkpoint(model, scm_info(**SETTINGS), tmp_path / "scm.safetensors")
    info, _ = read_checkpoint(path)
    assert (info.family, info.scm) == ("scm", SETTINGS)
    for family in ("scm", "tscam", None):  # an SCM model is TS-CAM at inference: the viewers can load it
        loaded = load_model(path, family=family)
        assert isinstance(loaded, SCM) and loaded.settings == CalibrationSettings(**SETTINGS)
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        torch.testing.assert_close(methods.get("scm")(loaded, images, CLASSES), methods.get("scm")(model, images, CLASSES))
        torch.testing.assert_close(loaded.train()(images), model.train()(images))
        model.eval()


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    scm_path = save_checkpoint(make_scm(), scm_info(), tmp_path / "scm.safetensors")
    tscam_path = save_checkpoint(make_tiny_model(), tiny_info(), tmp_path / "tscam.safetensors")
    with pytest.raises(CheckpointError, match=r"is a SCM checkpoint \(vit_tiny_patch16_224\), but a CNN CAM model"):
        load_model(scm_path, family="cnn_cam")
    with pytest.raises(CheckpointError, match=r"is a TS-CAM checkpoint \(vit_tiny_patch16_224\), but a SCM model"):
        load_model(tscam_path, family="scm")
    with pytest.raises(CheckpointError, match="the metadata says SCM but the model is TS-CAM"):
        save_checkpoint(make_tiny_model(), scm_info(), tmp_path / "wrong.safetensors")


def edited_checkpoint(folder: Path, model: torch.nn.Module, info: ModelInfo, **fields) -> Path:
    metadata = {**json.loads(info.to_json()), **fields}
    path = folder / "edited.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={METADATA_KEY: json.dumps(metadata)})
    return path


@pytest.mark.parametrize(("fields", "message"), [
    ({"scm": {"blocks": 0}}, r"metadata field scm is refused: SCM blocks \(--scm-blocks\) must be an integer in "
                             r"1\.\.32, got 0"),
    ({"scm": {"threshold": "0.5"}}, r"metadata field scm is refused: .*must be a positive number, got '0.5'"),
    ({"scm": {"depth": 3}}, r"metadata field scm is refused: unknown SCM settings: depth"),
    ({"scm": {"blocks": 3}}, r"tensors do not fit .* missing: calibration\.2\.lam, calibration\.2\.threshold"),
    ({"scm": [4]}, r"metadata field scm must be an object, not a JSON list"),
    ({"family": "tscam"}, r"metadata field scm holds SCM settings, but the checkpoint's family is tscam"),
])
def test_bad_scm_metadata_is_refused_naming_the_field(tmp_path, fields, message):
    path = edited_checkpoint(tmp_path, make_scm(**SETTINGS), scm_info(**SETTINGS), **fields)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_the_fashion_scm_preset_is_fashion_trained_as_scm():
    fashion, scm = PRESETS["fashion"], PRESETS["fashion-scm"]
    assert {key for key in set(fashion) | set(scm) if fashion.get(key) != scm.get(key)} == {"model_family", "export"}
    assert not scm["export"]  # the shipped checkpoint stays TS-CAM's
    tscam, model = build_training_model(preset_config("fashion"), 10), build_training_model(preset_config("fashion-scm"), 10)
    assert isinstance(model, SCM) and model.settings == CalibrationSettings()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) == count(tscam) + 2 * CalibrationSettings().blocks


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "fashion")


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """One epoch (5 steps) of SCM through train/run.py, validated and tested."""
    config = tiny_config(dataset, tmp_path_factory.mktemp("runs"), "scm", model_family="scm", epochs=1,
                         scm_blocks=2, scm_lam=0.8, test_split="test")
    assert main(cli_args(config)) == 0
    return config, Path(config.output) / config.name


def test_training_scores_an_scm_model_on_its_own_map(dataset):
    """Validation and the test split score SCM's map of an SCM model (methods.own), not TS-CAM's coupling."""
    torch.manual_seed(3)
    model = build_model(dataclasses.replace(scm_info(**SETTINGS), num_classes=10, class_names=[])).eval()  # 10 classes, as the data
    assert methods.own(model) is methods.get("scm") and methods.own(make_tiny_model()) is methods.get("tscam")
    loader = DataLoader(TorchWSOL(open_dataset(dataset, "test"), model.info.transform), batch_size=4,
                        collate_fn=collate)
    protocol = Protocol(cam_threshold=0.2)

    def ious(method=None):
        return [record.gt_known_iou for record in score_loader(model, loader, protocol, method)]

    assert ious() == ious(methods.get("scm")) != ious(methods.get("tscam"))


def test_training_runs_through_the_blocks_and_saves_an_scm_checkpoint(trained, images):
    config, run_dir = trained
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(line["stage"], line["step"]) for line in lines] == [("SCM", 5)]
    assert np.isfinite(lines[0]["train_loss"]) and 0 <= lines[0]["val_gt_known_loc"] <= 1
    info, tensors = read_checkpoint(run_dir / "best.safetensors")
    assert info.family == "scm" and info.scm == {**CalibrationSettings().to_dict(), "blocks": 2, "lam": 0.8}
    assert info.recipe["model_family"] == "scm" and "test" in info.evaluation
    assert not torch.equal(tensors["calibration.0.lam"], torch.tensor([0.8]))  # trained through the blocks
    assert not torch.equal(tensors["calibration.1.threshold"], torch.tensor([0.5]))


def test_the_saved_checkpoint_loads_back_with_the_trained_maps(trained, images):
    config, run_dir = trained
    state = load_state_file(run_dir / STATE_FILE)
    model = build_training_model(config, 10)
    model.load_state_dict(state["model"])  # the weights the run ended with
    loaded = load_model(run_dir / "last.safetensors", family="scm")
    assert isinstance(loaded, SCM) and len(loaded.calibration) == 2
    model.eval()
    classes = torch.tensor([[1, 9], [4, 0]])
    for name in ("scm", "tscam"):
        torch.testing.assert_close(methods.get(name)(loaded, images, classes), methods.get(name)(model, images, classes),
                                   rtol=0, atol=0)


def test_help_lists_the_scm_options(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--scm-blocks", "--scm-lam", "--scm-threshold", "--scm-first-iterations", "--scm-iterations"):
        assert option in text
    assert "scm: SCM (Bai et al., ECCV 2022)" in text and "fashion-scm:" in text


@pytest.mark.parametrize(("options", "message"), [
    (["--scm-blocks", "0"], r"SCM blocks \(--scm-blocks\) must be an integer in 1\.\.32, got 0"),
    (["--scm-iterations", "100"], r"SCM iterations \(--scm-iterations\) must be an integer in 1\.\.64, got 100"),
    (["--scm-threshold", "-0.5"], r"SCM threshold \(--scm-threshold\) must be a positive number, got -0\.5"),
    (["--scm-lam", "nan"], r"SCM lam \(--scm-lam\) must be a finite number, got nan"),
    (["--model-family", "tscam", "--scm-blocks", "2", "--scm-lam", "2"],
     r"--scm-blocks, --scm-lam: SCM options, but --model-family tscam trains no SCM \(add --model-family scm\)"),
])
def test_bad_scm_options_are_refused_before_a_run_folder_exists(dataset, tmp_path, capsys, options, message):
    config = tiny_config(dataset, tmp_path, "bad", model_family="scm")
    assert main(cli_args(config) + options) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "bad").exists()


def test_an_unknown_family_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-family", "rnn"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'rnn' (choose from" in capsys.readouterr().err
