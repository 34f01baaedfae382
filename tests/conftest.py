"""Tiny real models and images shared by the core tests: everything runs on one CPU core in seconds."""

from __future__ import annotations

import pytest
import torch

from tscam_core import TSCAM, ModelInfo, Preprocess, build_model

#: A 2-block ViT on 32 x 32 inputs with 8 x 8 patches (a 4 x 4 token grid): real timm modules, tiny cost.
TINY_ARCH = "vit_tiny_patch16_224"
TINY_KWARGS = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 3}
TINY_CLASSES = 5


def tiny_info(num_classes: int = TINY_CLASSES, **overrides) -> ModelInfo:
    kwargs = {**TINY_KWARGS, **overrides}
    size = kwargs["img_size"]
    return ModelInfo(arch=TINY_ARCH, num_classes=num_classes, timm_kwargs=kwargs,
                     preprocess=Preprocess((size, size), (size, size)).to_config())


def make_tiny_model(seed: int = 0, num_classes: int = TINY_CLASSES, **overrides) -> TSCAM:
    torch.manual_seed(seed)
    return build_model(tiny_info(num_classes, **overrides)).eval()


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def tiny_model() -> TSCAM:
    return make_tiny_model()
