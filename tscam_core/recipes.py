"""Training recipes: one flat config whose every field is a command-line option, and the presets.

The paper's presets (Section 4.1) fix only what the paper states; where it is silent (the
learning-rate schedule, augmentation beyond resize/crop/flip) they keep the simplest choice
(constant rate, no extras) and say so in the field's help.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Where ``--preset fashion`` writes the embedded benchmark when it is missing.
FASHION_DATA = "data/fashion-cluttered"


def _f(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field carrying its --help text (and argparse extras such as choices)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as config.json in the run folder."""

    # Data
    data: str = _f("", "dataset folder: CUB layout (images.txt ...) or ILSVRC root")
    dataset_kind: str = _f("auto", "dataset reader", choices=("auto", "cub", "ilsvrc"))
    train_split: str = _f("train", "split to train on")
    val_split: str = _f("test", "split validated each epoch; 'holdout' carves --holdout images from the "
                                "training split (never the test split) for validation and threshold choice")
    holdout: int = _f(0, "images held out of the training split when --val-split holdout")
    test_split: str = _f("", "split evaluated once at the end with the best checkpoint and the CAM threshold "
                             "chosen on the validation split (empty: none)")
    on_error: str = _f("raise", "bad annotation lines: raise an error naming file and line, or skip and count",
                       choices=("raise", "skip"))
    generate: bool = _f(False, "generate the Cluttered Fashion-MNIST benchmark into --data when it is missing")
    generate_train: int = _f(10000, "training images to generate (with --generate)")
    generate_test: int = _f(2000, "test images to generate (with --generate)")
    canvas: int = _f(64, "generated image side in pixels (with --generate)")

    # Model
    arch: str = _f("deit_small_patch16_224", "timm ViT architecture with a class token")
    pretrained: bool = _f(True, "start from the timm ImageNet weights of --arch (needs the Hugging Face hub)")
    pretrained_file: str = _f("", "local file with the backbone's ImageNet weights (instead of downloading)")
    img_size: int = _f(0, "model input size for timm (0: the architecture's own)")
    patch_size: int = _f(0, "patch size (0: the architecture's own)")
    depth: int = _f(0, "transformer blocks (0: the architecture's own)")
    embed_dim: int = _f(0, "token width (0: the architecture's own)")
    num_heads: int = _f(0, "attention heads (0: the architecture's own)")
    drop_path: float = _f(0.0, "stochastic depth rate")

    # Optimisation (AdamW, as in the paper)
    epochs: int = _f(60, "training epochs")
    batch_size: int = _f(128, "global batch size (split evenly over torchrun processes)")
    lr: float = _f(5e-5, "peak learning rate")
    schedule: str = _f("constant", "learning-rate schedule per step (the paper states none: constant)",
                       choices=("constant", "cosine"))
    warmup_epochs: float = _f(0.0, "linear warm-up length in epochs (fractions allowed)")
    min_lr_ratio: float = _f(0.0, "cosine schedule floor, as a fraction of --lr")
    weight_decay: float = _f(5e-4, "AdamW weight decay")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.99, "AdamW beta2")
    eps: float = _f(1e-8, "AdamW epsilon")
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing")
    grad_clip: float = _f(0.0, "clip the gradient norm to this value (0: off)")

    # Augmentation and preprocessing
    resize: int = _f(256, "training images are resized to this square size ...")
    crop: int = _f(224, "... then randomly cropped to this size (the model's input size)")
    hflip: bool = _f(True, "random horizontal flips in training")
    test_resize: int = _f(224, "validation/test images are resized to this square size (no crop)")

    # Localization validation
    threshold: float = _f(0.1, "CAM threshold of the official map-to-box protocol for GT-known Loc")
    val_thresholds: str = _f("0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.45,0.5",
                             "CAM thresholds swept on the validation split (the best one is reported)")

    # Runtime
    device: str = _f("auto", "auto (CUDA when available), cpu, cuda or cuda:N")
    amp: str = _f("bf16", "mixed precision on CUDA (ignored on the CPU)", choices=("none", "bf16", "fp16"))
    channels_last: bool = _f(True, "channels-last memory format on CUDA (ignored on the CPU)")
    workers: int = _f(4, "data-loading worker processes per training process")
    threads: int = _f(0, "torch CPU threads per process (0: torch's default)")
    seed: int = _f(0, "seed of initialisation, data order, augmentation and dropout")
    output: str = _f("runs", "parent folder of run folders")
    name: str = _f("", "run folder name (default: preset and time)")
    save_every: int = _f(100, "also save the resume state every N optimizer steps (0: only at epoch ends)")
    max_steps: int = _f(0, "stop after this many optimizer steps in all (0: no limit); for smoke tests")
    export: str = _f("", "copy the best checkpoint, with its test evaluation, to this path at the end")
    progress: bool = _f(True, "show progress bars")

    # Optional first stage: classification on plain Fashion-MNIST items (the ImageNet analogue)
    pretrain_epochs: int = _f(0, "epochs of a first, classification-only stage on plain Fashion-MNIST items "
                                 "before TS-CAM training on --data (0: no first stage)")
    pretrain_lr: float = _f(1e-3, "peak learning rate of the first stage (same schedule and warm-up)")
    pretrain_size: int = _f(32, "square size of the first stage's images (a multiple of the patch size)")
    pretrain_images: int = _f(0, "Fashion-MNIST training items used by the first stage (0: all 60,000)")
    pretrain_background: float = _f(1.0, "strongest colour-noise background of the first stage (0: always black); "
                                         "each image draws its strength uniformly below it")
    pretrain_source: str = _f("", "folder with the Fashion-MNIST idx files (default: Debian's dataset-fashion-mnist)")

    preset: str = _f("", "preset the other fields started from")

    def timm_kwargs(self) -> dict[str, Any]:
        """The non-default architecture fields, as timm keyword arguments."""
        kwargs: dict[str, Any] = {}
        for key in ("img_size", "patch_size", "depth", "embed_dim", "num_heads"):
            value = getattr(self, key)
            if value:
                kwargs[key] = value
        return kwargs

    def thresholds(self) -> list[float]:
        values = {float(t) for t in self.val_thresholds.split(",") if t.strip()} | {self.threshold}
        return sorted(values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**data)


_PAPER = dict(
    pretrained=True, weight_decay=5e-4, beta1=0.9, beta2=0.99, eps=1e-8,
    resize=256, crop=224, hflip=True, test_resize=224, schedule="constant",
    arch="deit_small_patch16_224", val_split="test", workers=8,
)

PRESETS: dict[str, dict[str, Any]] = {
    # Paper Sec. 4.1: CUB-200-2011, 60 epochs, lr 5e-5, batch 128.
    "cub": dict(_PAPER, dataset_kind="cub", data="data/CUB_200_2011", epochs=60, lr=5e-5, batch_size=128),
    # Paper Sec. 4.1: ILSVRC 2012, 12 epochs, lr 5e-4, batch 256.
    "ilsvrc": dict(_PAPER, dataset_kind="ilsvrc", data="data/ILSVRC2012", epochs=12, lr=5e-4, batch_size=256),
    # The embedded benchmark on two CPU cores, no ImageNet weights offline: the paper's two stages in small.
    # Stage 1 (ImageNet analogue): plain Fashion-MNIST items on 48 x 48 squares, classification only.
    # Stage 2 (CUB analogue): TS-CAM on the cluttered 64 x 64 images; validation and the CAM threshold
    # on 1,000 images held out of the training split; the test split is evaluated once, at the end.
    "fashion": dict(
        data=FASHION_DATA, dataset_kind="cub", generate=True, generate_train=20000, generate_test=2000, canvas=64,
        val_split="holdout", holdout=1000, test_split="test",
        arch="vit_tiny_patch16_224", pretrained=False, img_size=64, patch_size=8, depth=6, embed_dim=128,
        num_heads=4, drop_path=0.1,
        pretrain_epochs=2, pretrain_size=48, pretrain_lr=1e-3, pretrain_background=1.0,
        epochs=10, batch_size=64, lr=3e-4, schedule="cosine", warmup_epochs=0.5, min_lr_ratio=0.01,
        weight_decay=0.05, beta1=0.9, beta2=0.99, eps=1e-8, label_smoothing=0.1,
        resize=72, crop=64, hflip=True, test_resize=64,
        workers=1, threads=1, save_every=50, export="checkpoints/tscam_fashion.safetensors",
    ),
}


def preset_config(preset: str, **overrides: Any) -> TrainConfig:
    """The config of ``preset`` with ``overrides`` applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[preset], "preset": preset, **overrides})


__all__ = ["FASHION_DATA", "PRESETS", "TrainConfig", "preset_config"]
