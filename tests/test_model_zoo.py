"""The models a visitor can pick: sources, labels, lazy loading and the bounded cache."""

from __future__ import annotations

import huggingface_hub
import pytest
from conftest import make_tiny_model

from tscam_core.explorer import Explorer
from tscam_core.model_zoo import IMAGENET_MODEL, ModelZoo, default_sources, label_of, sources_from_environment


def counting_builder():
    built: list[str] = []

    def build(source: str) -> Explorer:
        built.append(source)
        return Explorer(make_tiny_model(seed=len(built)))

    return build, built


def test_models_load_on_first_use_and_only_the_most_recent_stay():
    build, built = counting_builder()
    zoo = ModelZoo(["/srv/models/a.safetensors", "timm:deit_small_patch16_224?file=/w/deit.pth", "hf://o/r/c.pth"],
                   build, capacity=2)
    assert zoo.labels == ["a.safetensors", "timm:deit_small_patch16_224", "hf://o/r/c.pth"]
    assert zoo.default == "a.safetensors" and built == []
    first = zoo.get("a.safetensors")
    assert zoo.get("a.safetensors") is first and built == ["/srv/models/a.safetensors"]
    zoo.get("timm:deit_small_patch16_224")
    zoo.get("a.safetensors")  # now the most recent
    zoo.get("hf://o/r/c.pth")  # evicts the least recent: the timm model
    assert zoo.loaded() == ["a.safetensors", "hf://o/r/c.pth"]
    zoo.get("timm:deit_small_patch16_224")
    assert built.count("timm:deit_small_patch16_224?file=/w/deit.pth") == 2
    with pytest.raises(KeyError, match="no model 'b'; choose one of a.safetensors"):
        zoo.get("b")


def test_two_files_of_one_name_are_told_apart_by_their_paths():
    zoo = ModelZoo(["x/best.safetensors", "y/best.safetensors"], counting_builder()[0])
    assert zoo.labels == ["x/best.safetensors", "y/best.safetensors"]
    assert label_of("/a/b/run.safetensors") == "run.safetensors"


def test_sources_from_the_environment():
    assert sources_from_environment({"TSCAM_MODELS": " a.safetensors, timm:deit_small_patch16_224 ,,"}) == [
        "a.safetensors", "timm:deit_small_patch16_224"]
    assert sources_from_environment({}) == []


def test_the_imagenet_model_is_left_out_where_the_hub_is_unreachable(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    sources, reason = default_sources("shipped.safetensors")
    assert sources == ["shipped.safetensors"] and "127.0.0.1:9" in reason
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert default_sources("shipped.safetensors") == (["shipped.safetensors"], "HF_HUB_OFFLINE is set")
    assert IMAGENET_MODEL == "timm:deit_small_patch16_224"
