"""Checkpoints: this project's format, official release files, and everything that must be refused."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest
import torch
from conftest import TINY_CLASSES, make_tiny_model, tiny_info

from tscam_core import (
    TSCAM,
    CheckpointError,
    ModelInfo,
    Preprocess,
    create_tscam,
    load_model,
    save_checkpoint,
)
from tscam_core.checkpoint import infer_official_info, read_checkpoint


def assert_same_outputs(model: TSCAM, loaded: TSCAM, size: int) -> None:
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))
    expected, got = model.eval().explain(images), loaded.explain(images)
    torch.testing.assert_close(got.logits, expected.logits, atol=0, rtol=0)
    torch.testing.assert_close(got.layer_attention, expected.layer_attention, atol=0, rtol=0)
    torch.testing.assert_close(got.semantic, expected.semantic, atol=0, rtol=0)
    torch.testing.assert_close(got.coupled(), expected.coupled(), atol=0, rtol=0)


def test_project_checkpoint_round_trip(tmp_path: Path):
    model = make_tiny_model(seed=3)
    info = tiny_info()
    info.class_names = ["cat", "dog", "bird", "fish", "frog"]
    info.recipe = {"epochs": 3, "lr": 0.001}
    path = save_checkpoint(model, info, tmp_path / "sub" / "tiny.safetensors")
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.info.class_names == info.class_names and loaded.info.recipe == info.recipe
    assert loaded.info.transform == Preprocess((32, 32), (32, 32))
    assert_same_outputs(model, loaded, 32)
    read_info, state = read_checkpoint(path)
    assert read_info.arch == info.arch and set(state) == set(model.state_dict())


def test_linear_head_checkpoint_round_trip(tmp_path: Path):
    torch.manual_seed(2)
    model = create_tscam("vit_tiny_patch16_224", 4, head_kind="linear", **tiny_info().timm_kwargs).eval()
    info = tiny_info(num_classes=4)
    info.head_kind = "linear"
    loaded = load_model(save_checkpoint(model, info, tmp_path / "linear.safetensors"))
    assert loaded.head_kind == "linear" and isinstance(loaded.head, torch.nn.Linear)
    assert_same_outputs(model, loaded, 32)


def official_file(model: TSCAM, path: Path) -> Path:
    """A checkpoint laid out as the official TS-CAM release: DataParallel keys under 'state_dict'."""
    torch.save({"epoch": 60, "state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    return path


# The official release infers DeiT head counts (64 channels a head), so the source model uses them.
OFFICIAL_KWARGS = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 128, "num_heads": 2}


def test_official_release_layout_with_inferred_architecture(tmp_path: Path):
    torch.manual_seed(0)
    source = create_tscam("vit_tiny_patch16_224", 6, **OFFICIAL_KWARGS).eval()
    path = official_file(source, tmp_path / "tscam_custom.pth")
    loaded = load_model(path)
    assert loaded.num_classes == 6 and loaded.depth == 2 and loaded.embed_dim == 128
    assert loaded.blocks[0].attn.num_heads == 2 and loaded.patch_size == (8, 8)
    assert loaded.info.transform.input_size == (32, 32)
    assert_same_outputs(source, loaded, 32)


def test_official_release_layout_with_an_explicit_architecture(tmp_path: Path):
    torch.manual_seed(0)
    source = create_tscam("vit_tiny_patch16_224", 6, **OFFICIAL_KWARGS).eval()
    path = official_file(source, tmp_path / "tscam_custom.pth")
    loaded = load_model(path, arch="vit_tiny_patch16_224", timm_kwargs=OFFICIAL_KWARGS)
    assert loaded.info.arch == "vit_tiny_patch16_224"
    assert_same_outputs(source, loaded, 32)


def test_official_deit_tiny_release_infers_the_named_architecture(tmp_path: Path):
    torch.manual_seed(0)
    source = create_tscam("deit_tiny_patch16_224", 200).eval()
    path = official_file(source, tmp_path / "ts-cam-deit-tiny.pth")
    loaded = load_model(path)
    assert loaded.info.arch == "deit_tiny_patch16_224" and loaded.info.timm_kwargs == {}
    assert loaded.num_classes == 200
    assert_same_outputs(source, loaded, 224)
    state = {k: v for k, v in source.state_dict().items() if k != "head.weight"}
    with pytest.raises(CheckpointError, match="lacks head.weight"):
        infer_official_info(state, "headless.pth")


class Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_a_pickle_with_a_code_payload_is_refused_and_never_run(tmp_path: Path, writer: str):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    if writer == "torch":  # real weights next to the payload, the way an attacker would ship it
        torch.save({"state_dict": make_tiny_model().state_dict(), "extra": Payload(marker)}, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump({"state_dict": {}, "extra": Payload(marker)}, handle, protocol=2)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused, it needs code to unpickle \(\w+\.system\)"):
        load_model(path)
    assert not marker.exists()


def test_truncated_and_corrupted_checkpoints(tmp_path: Path):
    model = make_tiny_model()
    good_pth = official_file(model, tmp_path / "good.pth")
    good_st = save_checkpoint(model, tiny_info(), tmp_path / "good.safetensors")
    good_legacy = _legacy_torch_file(model, tmp_path / "legacy.pth").read_bytes()
    cases = {
        "cut.pth": good_pth.read_bytes()[: good_pth.stat().st_size // 2],
        "cut.safetensors": good_st.read_bytes()[: good_st.stat().st_size // 2],
        "noise.pth": os.urandom(4096),
        "noise.safetensors": os.urandom(4096),
        "huge_header.safetensors": (2**62).to_bytes(8, "little") + b"{}",
        "empty.pth": b"",
        "one_byte.pth": good_legacy[:1],
        "half_legacy.pth": good_legacy[: len(good_legacy) // 2],
        "empty.safetensors": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            load_model(path)


def test_randomly_damaged_checkpoints_give_checkpoint_errors(tmp_path: Path):
    """Seeded byte flips and cuts: torch's unpickler fails in many ways, all must become CheckpointError."""
    model = create_tscam("vit_tiny_patch16_224", 3, img_size=16, patch_size=8, depth=1, embed_dim=8, num_heads=1)
    originals = {
        "zip.pth": official_file(model, tmp_path / "zip.pth").read_bytes(),
        "legacy.pth": _legacy_torch_file(model, tmp_path / "legacy.pth").read_bytes(),
        "ckpt.safetensors": save_checkpoint(model, ModelInfo("vit_tiny_patch16_224", 3, {
            "img_size": 16, "patch_size": 8, "depth": 1, "embed_dim": 8, "num_heads": 1}),
            tmp_path / "ckpt.safetensors").read_bytes(),
    }
    rng = random.Random(0)
    outcomes = {"loaded": 0, "refused": 0}
    for trial in range(300):
        name = rng.choice(sorted(originals))
        data = bytearray(originals[name])
        if trial % 3 == 0:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / f"damaged_{trial}_{name}"
        path.write_bytes(bytes(data))
        try:
            load_model(path)
            outcomes["loaded"] += 1  # a flip inside tensor data leaves a loadable file
        except CheckpointError as error:
            assert path.name in str(error)
            outcomes["refused"] += 1
    assert outcomes["refused"] >= 100


def _legacy_torch_file(model: TSCAM, path: Path) -> Path:
    torch.save({"state_dict": model.state_dict()}, path, _use_new_zipfile_serialization=False)
    return path


@pytest.mark.parametrize(("key", "value", "message"), [
    ("pos_embed", torch.zeros(3), r"pos_embed has shape \(3,\)"),
    ("pos_embed", torch.zeros(1, 20, 48), "19 patch positions, not a square grid"),
    ("patch_embed.proj.weight", None, "patch_embed.proj.weight"),
    ("blocks.0.mlp.fc1.weight", None, "blocks.0.mlp.fc1.weight is missing"),
    ("head.weight", torch.zeros(5, 48), r"head.weight has shape \(5, 48\)"),
])
def test_official_files_with_odd_tensors(tmp_path: Path, key: str, value, message: str):
    state = make_tiny_model().state_dict()
    if value is None:
        del state[key]
    else:
        state[key] = value
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_project_checkpoint_whose_metadata_names_no_buildable_model(tmp_path: Path):
    info = tiny_info()
    info.timm_kwargs = {**info.timm_kwargs, "emKed_dim": 48}
    path = save_checkpoint(make_tiny_model(), info, tmp_path / "typo.safetensors")
    with pytest.raises(CheckpointError, match="typo.safetensors: cannot build the model it describes.*emKed_dim"):
        load_model(path)
    info = tiny_info()
    info.arch = "no_such_vit"
    path = save_checkpoint(make_tiny_model(), info, tmp_path / "unknown.safetensors")
    with pytest.raises(CheckpointError, match="unknown timm architecture 'no_such_vit'"):
        load_model(path)


def test_a_checkpoint_of_another_architecture_names_the_mismatching_keys(tmp_path: Path):
    torch.manual_seed(0)
    source = create_tscam("vit_tiny_patch16_224", 6, **OFFICIAL_KWARGS)
    path = official_file(source, tmp_path / "other.pth")
    other = {**OFFICIAL_KWARGS, "embed_dim": 192, "num_heads": 3, "depth": 3}
    with pytest.raises(CheckpointError) as caught:
        load_model(path, arch="vit_tiny_patch16_224", timm_kwargs=other)
    message = str(caught.value)
    assert "other.pth does not fit" in message
    assert "missing: blocks.2.attn.proj.bias" in message
    assert "shape mismatch: blocks.0.attn.proj.bias (checkpoint (128,), model (192,))" in message
    assert "more" in message  # long lists are cut, with the count of keys left out


def test_project_checkpoint_with_weights_of_another_model(tmp_path: Path):
    model = make_tiny_model(num_classes=3)
    path = save_checkpoint(model, tiny_info(num_classes=TINY_CLASSES), tmp_path / "wrong.safetensors")
    with pytest.raises(CheckpointError, match="wrong.safetensors: metadata field num_classes is 5, but the file's "
                                              "head.weight is for 3 classes"):
        load_model(path)


def test_files_that_are_not_tscam_checkpoints(tmp_path: Path):
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="without tscam metadata"):
        load_model(plain)
    not_tscam = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, not_tscam)
    with pytest.raises(CheckpointError, match="not a TS-CAM state dict"):
        load_model(not_tscam)
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_model(tmp_path / "absent.pth")


def test_model_info_checks_class_names():
    with pytest.raises(CheckpointError, match="2 class names for 3 classes"):
        ModelInfo(arch="deit_tiny_patch16_224", num_classes=3, class_names=["a", "b"])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ModelInfo.from_json("{oops", source="x")


def test_official_deit_small_at_384_loads_though_timm_names_no_such_deit(tmp_path: Path):
    torch.manual_seed(0)
    source = create_tscam("vit_small_patch16_384", 3, num_heads=6).eval()
    path = official_file(source, tmp_path / "ts-cam-deit-small-384.pth")
    loaded = load_model(path)
    assert loaded.info.timm_kwargs["img_size"] == 384 and loaded.info.timm_kwargs["num_heads"] == 6
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in source.state_dict().items())
