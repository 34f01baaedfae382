"""load_model's other sources: timm classifiers with local weights, and the Hugging Face Hub (offline)."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from conftest import make_tiny_model, tiny_info
from safetensors.torch import save_file

from tscam_core import CheckpointError, load_model, save_checkpoint


@pytest.fixture(scope="module")
def imagenet_classifier_file(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A randomly initialised vit_tiny ImageNet classifier and its weights as a local safetensors file."""
    torch.manual_seed(0)
    classifier = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    path = tmp_path_factory.mktemp("timm") / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(path))
    return classifier, path


def test_timm_classifier_with_local_weights(imagenet_classifier_file):
    classifier, path = imagenet_classifier_file
    model = load_model(f"timm:vit_tiny_patch16_224?file={path}")
    assert model.head_kind == "linear" and model.num_classes == 1000 and not model.training
    assert model.info.arch == "vit_tiny_patch16_224" and len(model.info.class_names) == 1000
    assert model.info.class_names[:2] == ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    assert model.info.transform.input_size == (224, 224)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    explanation = model.explain(images)
    with torch.no_grad():
        expected = classifier(images)
    torch.testing.assert_close(explanation.logits, expected, atol=1e-5, rtol=1e-5)
    assert explanation.semantic.shape == (2, 1000, 14, 14)


def test_timm_source_with_a_missing_weights_file(tmp_path: Path):
    with pytest.raises(CheckpointError, match="no weights file"):
        load_model(f"timm:vit_tiny_patch16_224?file={tmp_path / 'absent.safetensors'}")


def test_timm_weights_of_another_architecture_name_the_keys(tmp_path: Path):
    other = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1)
    path = tmp_path / "one_block.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match=r"one_block.safetensors.*Missing key.*blocks\.1\.norm1\.weight"):
        load_model(f"timm:vit_tiny_patch16_224?file={path}")


def test_timm_weights_that_are_not_a_weights_file(tmp_path: Path):
    path = tmp_path / "noise.pth"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match="timm:vit_tiny_patch16_224.*noise.pth"):
        load_model(f"timm:vit_tiny_patch16_224?file={path}")


def offline_hub_cache(root: Path, repo_id: str, filename: str, data: bytes) -> Path:
    """The on-disk layout huggingface_hub writes after a download, built by hand."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / ("models--" + repo_id.replace("/", "--"))
    target = repo_dir / "snapshots" / revision / filename
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    return target


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads these once at import; set them where its download code looks.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hub_source_resolved_from_the_local_cache(offline_hub: Path, tmp_path: Path):
    model = make_tiny_model(seed=4)
    local = save_checkpoint(model, tiny_info(), tmp_path / "tiny.safetensors")
    offline_hub_cache(offline_hub, "someone/tscam-tiny", "weights/tiny.safetensors", local.read_bytes())
    loaded = load_model("hf://someone/tscam-tiny/weights/tiny.safetensors")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(loaded.explain(images).semantic, model.explain(images).semantic, atol=0, rtol=0)


def test_hub_source_that_is_not_cached_offline(offline_hub: Path):
    with pytest.raises(CheckpointError, match="hf://someone/absent/model.safetensors: could not fetch"):
        load_model("hf://someone/absent/model.safetensors")


def test_malformed_hub_address():
    with pytest.raises(CheckpointError, match="expected hf://owner/repo/path"):
        load_model("hf://only-owner/repo")


def test_class_names_and_device_options(tmp_path: Path):
    path = save_checkpoint(make_tiny_model(), tiny_info(), tmp_path / "tiny.safetensors")
    loaded = load_model(path, class_names=list("abcde"), device="cpu")
    assert loaded.info.class_names == list("abcde")
    assert next(loaded.parameters()).device.type == "cpu"
    with pytest.raises(CheckpointError, match="2 class names given for a 5-class model"):
        load_model(path, class_names=["a", "b"])


@pytest.mark.parametrize("name", ["c++ weights.safetensors", "a&b.safetensors", "x%41.safetensors"])
def test_timm_weights_path_is_taken_verbatim(imagenet_classifier_file, tmp_path: Path, name: str):
    path = tmp_path / name
    shutil.copy(imagenet_classifier_file[1], path)
    model = load_model(f"timm:vit_tiny_patch16_224?file={path}")
    assert model.info.source.endswith(name)


@pytest.mark.parametrize(("name", "data", "message"), [
    ("passwd", b"root:x:0:0:root:/root:/bin/bash\n", "passwd: not a weights file"),
    ("empty.pth", b"", "empty.pth: an empty file, not a weights file"),
    ("garbage.pth", bytes(range(256)) * 8, "garbage.pth: not a weights file"),
    ("cut.safetensors", None, "cut.safetensors: not a weights file"),
    ("folder", None, "folder is a directory, not a weights file"),
])
def test_timm_source_with_a_file_that_is_not_weights(imagenet_classifier_file, tmp_path: Path, name: str,
                                                     data: bytes | None, message: str):
    path = tmp_path / name
    if name == "folder":
        path.mkdir()
    else:
        whole = imagenet_classifier_file[1].read_bytes()
        path.write_bytes(whole[: len(whole) // 2] if data is None else data)
    with pytest.raises(CheckpointError, match=f"^timm:vit_tiny_patch16_224\\?file=.*{message}") as caught:
        load_model(f"timm:vit_tiny_patch16_224?file={path}")
    assert "\n" not in str(caught.value)


def test_timm_weights_with_nan_are_refused(imagenet_classifier_file, tmp_path: Path):
    classifier, _ = imagenet_classifier_file
    state = {k: v.clone().contiguous() for k, v in classifier.state_dict().items()}
    state["blocks.3.mlp.fc1.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"tensor blocks\.3\.mlp\.fc1\.weight holds 1 NaN or infinite values"):
        load_model(f"timm:vit_tiny_patch16_224?file={path}")


@pytest.fixture
def unreachable_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hub address nothing answers at, and an empty cache: the state of a machine without network."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_timm_source_without_the_hub_fails_at_once_and_says_how_to_pass_a_file(unreachable_hub: Path):
    with pytest.raises(CheckpointError) as caught:
        load_model("timm:deit_small_patch16_224")
    message = str(caught.value)
    assert "\n" not in message and "Hugging Face Hub is unreachable (127.0.0.1:9" in message
    assert message.endswith("pass timm:deit_small_patch16_224?file=PATH")


def test_a_timm_source_without_the_hub_uses_weights_already_cached(unreachable_hub: Path, imagenet_classifier_file):
    classifier, path = imagenet_classifier_file
    repo_id = timm.get_pretrained_cfg("vit_tiny_patch16_224").hf_hub_id
    offline_hub_cache(unreachable_hub, repo_id, "model.safetensors", path.read_bytes())
    model = load_model("timm:vit_tiny_patch16_224")
    assert model.info.class_names[281] == "tabby, tabby cat"
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model.explain(images).logits, classifier(images), atol=1e-5, rtol=1e-5)


def test_a_hub_file_without_the_hub_says_so_in_one_line(unreachable_hub: Path):
    with pytest.raises(CheckpointError, match=r"^hf://o/r/m.safetensors: .*Hub is unreachable .*m.safetensors is not "
                                              r"in the local cache; .*pass its local path instead$"):
        load_model("hf://o/r/m.safetensors")
