"""Training recipes: one flat config whose every field is a command-line option, and the presets.

The paper's presets (Section 4.1) fix only what the paper states; where it is silent (the
learning-rate schedule, augmentation beyond resize/crop/flip) they keep the simplest choice
(constant rate, no extras) and say so in the field's help.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .scm import CalibrationSettings

#: Where ``--preset fashion`` writes the embedded benchmark when it is missing.
FASHION_DATA = "data/fashion-cluttered"
#: SCM's defaults, the authors' (``tscam_core/scm.py``): the --scm-* fields start from them.
_SCM = CalibrationSettings()


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
    generate_val: int = _f(0, "validation images to generate (with --generate) as split 'val': Fashion-MNIST "
                              "test items that no test image shows and no stage trains on")
    canvas: int = _f(64, "generated image side in pixels (with --generate)")

    # Model
    model_family: str = _f("tscam", "tscam: TS-CAM on a timm ViT with a class token; cnn_cam: CAM (Zhou et al. "
                                    "2016) on a timm CNN, the CNN baseline of the paper's Table 5; scm: SCM (Bai "
                                    "et al., ECCV 2022), TS-CAM trained through a spatial calibration module that "
                                    "inference drops (the --scm-* options)",
                           choices=("tscam", "cnn_cam", "scm"))
    arch: str = _f("deit_small_patch16_224", "timm architecture: a ViT with a class token (tscam) or a CNN (cnn_cam)")
    timm_extra: str = _f("", "further timm.create_model keyword arguments as a JSON object, e.g. "
                             "'{\"output_stride\": 8}' for a CNN map at 1/8 of the input size")
    pretrained: bool = _f(True, "start from the timm ImageNet weights of --arch (needs the Hugging Face hub)")
    pretrained_file: str = _f("", "local file with the backbone's ImageNet weights (instead of downloading)")
    img_size: int = _f(0, "model input size for timm, ViT only (0: the architecture's own)")
    patch_size: int = _f(0, "patch size, ViT only (0: the architecture's own)")
    depth: int = _f(0, "transformer blocks, ViT only (0: the architecture's own)")
    embed_dim: int = _f(0, "token width, ViT only (0: the architecture's own)")
    num_heads: int = _f(0, "attention heads, ViT only (0: the architecture's own)")
    drop_path: float = _f(0.0, "stochastic depth rate")

    # SCM (--model-family scm): the authors' values, none of them CUB's own (the token grid is the model's)
    scm_blocks: int = _f(_SCM.blocks, "SCM: activation diffusion blocks (ADBs) between the semantic maps and the loss")
    scm_lam: float = _f(_SCM.lam, "SCM: initial lambda, the learnable weight of the tokens' class-score similarity E "
                                  "in M = (D - A) * (lambda E - 1)")
    scm_threshold: float = _f(_SCM.threshold, "SCM: initial tau, each ADB's learnable filter threshold, a fraction "
                                              "of the largest value of the fused attention map")
    scm_first_iterations: int = _f(_SCM.first_iterations, "SCM: Newton-Schulz iterations of the first ADB's M^-1")
    scm_iterations: int = _f(_SCM.iterations, "SCM: Newton-Schulz iterations of each later ADB's M^-1")

    # Optimisation (AdamW, as in the paper)
    epochs: int = _f(60, "training epochs")
    batch_size: int = _f(128, "global batch size (split evenly over torchrun processes)")
    lr: float = _f(5e-5, "peak learning rate")
    head_lr: float = _f(0.0, "peak learning rate of the classifier head (0: --lr); a new head on a pretrained "
                             "backbone learns faster than the backbone may move")
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
    val_thresholds: str = _f(",".join(f"{0.05 * k:.2f}" for k in range(1, 20)),
                             "CAM thresholds swept on the validation split (the best one is reported); the whole "
                             "0.05..0.95 range by default, since a map's best threshold can lie anywhere in it")

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
    pretrain_head: str = _f("conv", "classifier of the first stage: conv, TS-CAM's own (the mean of S_c); token, "
                                    "a linear head on the class token, as the ImageNet-trained DeiT the paper starts "
                                    "from has (dropped before the localization stage)", choices=("conv", "token"))
    pretrain_size: int = _f(32, "square size of the first stage's images (a multiple of the patch size)")
    pretrain_images: int = _f(0, "Fashion-MNIST training items used by the first stage (0: all 60,000)")
    pretrain_background: float = _f(1.0, "strongest colour-noise background of the first stage (0: always black); "
                                         "each image draws its strength uniformly below it")
    pretrain_source: str = _f("", "folder with the Fashion-MNIST idx files (default: Debian's dataset-fashion-mnist)")

    preset: str = _f("", "preset the other fields started from")

    def timm_kwargs(self) -> dict[str, Any]:
        """The non-default architecture fields and --timm-extra, as timm keyword arguments."""
        kwargs: dict[str, Any] = {}
        for key in VIT_FIELDS:
            value = getattr(self, key)
            if value:
                kwargs[key] = value
        if self.model_family == "cnn_cam" and kwargs:
            shown = ", ".join("--" + key.replace("_", "-") for key in kwargs)
            raise ValueError(f"{shown}: ViT options, but --model-family cnn_cam trains a CNN "
                             "(set them to 0; CNN options go in --timm-extra)")
        extra = self.timm_extra_kwargs()
        clash = sorted(set(extra) & set(kwargs))
        if clash:
            raise ValueError(f"--timm-extra repeats {', '.join(clash)}, which has its own option")
        return {**kwargs, **extra}

    def scm_settings(self) -> CalibrationSettings:
        """SCM's settings from the --scm-* fields (a ValueError names a bad one, or one set for another family)."""
        settings = CalibrationSettings(**{name: getattr(self, "scm_" + name) for name in _SCM.to_dict()})
        if self.model_family != "scm" and settings != _SCM:
            changed = [name for name, value in settings.to_dict().items() if getattr(_SCM, name) != value]
            shown = ", ".join("--scm-" + name.replace("_", "-") for name in changed)
            raise ValueError(f"{shown}: SCM options, but --model-family {self.model_family} trains no SCM "
                             "(add --model-family scm)")
        return settings

    def timm_extra_kwargs(self) -> dict[str, Any]:
        if not self.timm_extra.strip():
            return {}
        try:
            extra = json.loads(self.timm_extra)
        except json.JSONDecodeError as error:
            raise ValueError(f"--timm-extra {self.timm_extra!r} is not valid JSON ({error})") from error
        if not isinstance(extra, dict):
            raise ValueError(f"--timm-extra {self.timm_extra!r} is not a JSON object of keyword arguments")
        return extra

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

    @classmethod
    def from_recipe(cls, recipe: dict[str, Any]) -> TrainConfig:
        """The config a checkpoint was trained with, from the recipe in its metadata: the run's config
        plus its progress (epochs_done, steps_done); fields this version does not know are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in recipe.items() if key in known})


#: The architecture fields that only a ViT takes.
VIT_FIELDS = ("img_size", "patch_size", "depth", "embed_dim", "num_heads")

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
    # The backbone is timm's hybrid ViT-Tiny (a 7x7 convolution and a max-pool before 2x2 patches, so
    # 8x8-pixel tokens): a ViT with a class token whose convolutional stem learns from few images
    # far faster than a linear patch embedding (Xiao et al., "Early Convolutions Help Transformers See
    # Better", 2021), which a from-scratch CPU budget needs.
    # Stage 1 (ImageNet analogue): plain Fashion-MNIST items on 48 x 48 squares, classification only.
    # Stage 2 (CUB analogue): TS-CAM on the cluttered 64 x 64 images, one per Fashion-MNIST training
    # item; validation and the CAM threshold on the generated 'val' split, 1,000 images of Fashion-MNIST
    # test items that neither stage trains on and no test image shows; the test split is evaluated
    # once, at the end. Data load in the training process (workers=0): on two
    # cores a loader process preempts the two compute threads, which wait for each other at every op.
    "fashion": dict(
        data=FASHION_DATA, dataset_kind="cub", generate=True, generate_train=60000, generate_test=2000,
        generate_val=1000, canvas=64, val_split="val", holdout=0, test_split="test",
        arch="vit_tiny_r_s16_p8_224", pretrained=False, img_size=64, patch_size=2, depth=6, embed_dim=128,
        num_heads=4, drop_path=0.0,
        pretrain_epochs=2, pretrain_size=48, pretrain_lr=1e-3, pretrain_background=1.0,
        epochs=4, batch_size=64, lr=5e-4, schedule="cosine", warmup_epochs=0.3, min_lr_ratio=0.01,
        weight_decay=0.05, beta1=0.9, beta2=0.99, eps=1e-8, label_smoothing=0.1,
        resize=72, crop=64, hflip=True, test_resize=64,
        workers=0, threads=2, save_every=200, export="checkpoints/tscam_fashion.safetensors",
    ),
}


# The CNN CAM baseline of Table 5, trained exactly as "fashion" (same data, stages, schedule, seed).
# timm's ResNet-10-T at half width (every channel count halved: stem 16, stages 32-64-128-256) with
# output stride 8 (the last two stages dilated): 1.23M parameters and 0.18 GFLOPs per 64 x 64 image,
# as the hybrid ViT-Tiny TS-CAM (1.25M, 0.18 GFLOPs), and the same 8 x 8 map. Only the shipped TS-CAM
# checkpoint is committed, so this one stays in its run folder (runs/<name>/best.safetensors).
PRESETS["fashion-cnn"] = dict(
    PRESETS["fashion"], model_family="cnn_cam", arch="resnet10t",
    timm_extra=json.dumps({"channels": [32, 64, 128, 256], "stem_width": 16, "output_stride": 8}),
    img_size=0, patch_size=0, depth=0, embed_dim=0, num_heads=0, export="",
)


# SCM trained exactly as "fashion" (same backbone, data, stages, schedule, seed), its first stage through
# its own classifier (the calibrated S^L's mean) as TS-CAM's is through its own. No export: the shipped
# checkpoint stays TS-CAM's.
PRESETS["fashion-scm"] = dict(PRESETS["fashion"], model_family="scm", export="")


def preset_config(preset: str, **overrides: Any) -> TrainConfig:
    """The config of ``preset`` with ``overrides`` applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[preset], "preset": preset, **overrides})


__all__ = ["FASHION_DATA", "PRESETS", "VIT_FIELDS", "TrainConfig", "preset_config"]
