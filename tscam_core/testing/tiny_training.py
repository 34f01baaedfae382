"""A tiny real training setup shared by the training tests and scripts/kill_resume.py: generated
images, a 2-block ViT, trained in a few CPU seconds."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from safetensors.torch import load_file

from tscam_core.datasets.fashion import BenchmarkConfig, generate
from tscam_core.recipes import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "fashion_mnist_small"
RUN_SCRIPT = ROOT / "train" / "run.py"

#: 48 training images on 32 x 32 canvases, from the committed Fashion-MNIST fixture.
TINY_BENCHMARK = BenchmarkConfig(train=48, test=12, canvas=32, item_min=12, item_max=28,
                                 distractors_min=1, distractors_max=2, seed=0)


def make_dataset(folder: Path) -> Path:
    generate(folder, TINY_BENCHMARK, FIXTURE, progress=False)
    return folder


def tiny_config(data: Path, output: Path, name: str, **overrides) -> TrainConfig:
    """A full config (no preset) that trains a 4 x 4-token ViT for a few CPU steps."""
    base = TrainConfig(
        data=str(data), dataset_kind="cub", val_split="holdout", holdout=8, test_split="",
        arch="vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3,
        drop_path=0.1, epochs=3, batch_size=8, lr=1e-3, schedule="cosine", warmup_epochs=0.5, weight_decay=0.05,
        label_smoothing=0.1, resize=36, crop=32, test_resize=32, workers=0, threads=1, output=str(output),
        name=name, save_every=2, progress=False,
    )
    return dataclasses.replace(base, **overrides)


def cli_args(config: TrainConfig) -> list[str]:
    """The command-line options that reproduce ``config`` through train/run.py."""
    args = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        option = "--" + field.name.replace("_", "-")
        if field.name == "preset":
            continue
        if isinstance(value, bool):
            args.append(option if value else "--no-" + option[2:])
        else:
            args += [option, str(value)]
    return args


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    return env


def python() -> str:
    return sys.executable


def weights(path: Path) -> dict:
    return load_file(str(path))
