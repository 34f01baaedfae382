"""Checkpoints: this project's safetensors format, official TS-CAM release files, and timm / hub sources.

This project's format is one ``.safetensors`` file whose header metadata holds a JSON
description (architecture, classes, preprocessing, recipe), so a file alone rebuilds the
model. Pickled files are only read with ``weights_only=True``: a file that needs code to
unpickle is refused, never run.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from .cnn_cam import CNNCAM, create_cnn_cam
from .errors import CheckpointError
from .explanation import CAM_VARIANTS, VARIANTS, MapSpec
from .files import atomic_write
from .metadata import FAMILY_LABELS, SERVES_AS, Family, checked_fields, json_type
from .model import TSCAM, HeadKind, create_tscam, infer_num_heads
from .scm import SCM, CalibrationSettings, create_scm
from .transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocess

FORMAT_NAME = "tscam-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "tscam"
#: How much larger than the grid its position embedding was trained on a TS-CAM input may be, a side.
MAX_GRID_RATIO = 2


#: The paper's CAM threshold (Sec. 4.1), for a checkpoint that records none of its own.
PAPER_THRESHOLD = 0.1


@dataclass
class ModelInfo:
    """Everything besides the weights that a checkpoint must carry to be used on its own."""

    arch: str
    num_classes: int
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    head_kind: HeadKind = "conv"
    class_names: list[str] = field(default_factory=list)
    preprocess: dict[str, Any] = field(default_factory=lambda: Preprocess((224, 224), (224, 224)).to_config())
    recipe: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    family: Family = "tscam"  # absent from checkpoints written before CNN CAM existed: those are TS-CAM
    scm: dict[str, Any] = field(default_factory=dict)  # SCM's CalibrationSettings, for family "scm"
    source: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILY_LABELS:
            raise CheckpointError(f"{self.source or 'checkpoint'}: unknown model family {self.family!r}; "
                                  f"this tscam knows {', '.join(FAMILY_LABELS)}")
        if not self.class_names:
            self.class_names = [f"class {i}" for i in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise CheckpointError(f"{self.source or 'checkpoint'}: {len(self.class_names)} class names for "
                                  f"{self.num_classes} classes")

    @property
    def transform(self) -> Preprocess:
        return Preprocess.from_config(self.preprocess)

    def default_threshold(self) -> tuple[float, str]:
        """The CAM threshold to draw boxes at when none is given, and why that one: the one training
        chose on its validation images (never on the test split), else the one it scored its test split
        at, else the one it was trained with, else the paper's (0.1, Sec. 4.1)."""
        validation = self.evaluation.get("validation")
        for value, why in (
            (validation.get("best_threshold") if isinstance(validation, dict) else None,
             "the checkpoint's, chosen on its validation images"),
            (self.evaluation.get("best_threshold"), "the checkpoint's, chosen in its training"),
            (self.recipe.get("threshold"), "the one the checkpoint was trained with"),
        ):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
                return float(value), why
        return PAPER_THRESHOLD, "the paper's (the checkpoint records none of its own)"

    def map_scores(self) -> dict[str, dict]:
        """Each map variant's best GT-known Loc on the checkpoint's validation images and its threshold
        there (``evaluation.validation.maps``, written by training); empty where it compared none."""
        validation = self.evaluation.get("validation")
        scores = validation.get("maps") if isinstance(validation, dict) else None
        return scores if isinstance(scores, dict) else {}

    def map_threshold(self, variant: str) -> float:
        """The CAM threshold to draw ``variant``'s boxes at: the one it scores best with on the checkpoint's
        validation images where training compared the maps, else ``default_threshold``'s."""
        scores = self.map_scores()
        return float(scores[variant]["best_threshold"]) if variant in scores else self.default_threshold()[0]

    def best_map(self) -> tuple[MapSpec, float, str]:
        """The map to open on, its CAM threshold and why: the variant with the best GT-known Loc on the
        checkpoint's validation images (the paper's ordering of the maps need not hold for every model),
        else the model's own map at ``default_threshold``."""
        scores = self.map_scores()
        own = MapSpec(CAM_VARIANTS[0] if self.family == "cnn_cam" else VARIANTS[0])
        if own.variant not in scores:
            threshold, why = self.default_threshold()
            return own, threshold, f"the model's own map (the checkpoint compares no maps); threshold {why}"
        best = max(scores, key=lambda variant: scores[variant]["gt_known_loc_best"])  # the first wins ties
        ranking = ", ".join(f"{MapSpec(v).label} {scores[v]['gt_known_loc_best']:.1%}"
                            for v in sorted(scores, key=lambda v: -scores[v]["gt_known_loc_best"]))
        return MapSpec(best), self.map_threshold(best), (
            f"the map that localizes best on the checkpoint's validation images (GT-known Loc: {ranking}), "
            "at the threshold it scores best with there")

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("source")
        return json.dumps({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **data})

    @classmethod
    def from_json(cls, text: str, source: str = "") -> ModelInfo:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as error:  # RecursionError: nested thousands deep
            raise CheckpointError(f"{source}: the checkpoint's metadata is not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: the checkpoint's metadata is a JSON {json_type(data)}, not an object")
        if data.get("format") != FORMAT_NAME:
            raise CheckpointError(f"{source}: not a tscam checkpoint (no '{FORMAT_NAME}' metadata)")
        version = data.get("format_version")
        if type(version) is not int or version != FORMAT_VERSION:
            raise CheckpointError(f"{source}: metadata field format_version is {version!r}; this tscam reads "
                                  f"version {FORMAT_VERSION}")
        return cls(**checked_fields(data, source), source=source)


def build_model(info: ModelInfo) -> TSCAM | CNNCAM:
    """The untrained model ``info`` describes, of its family; ``info`` is kept at ``model.info``."""
    if info.family == "cnn_cam":
        model: TSCAM | CNNCAM = create_cnn_cam(info.arch, info.num_classes, **info.timm_kwargs)
    elif info.family == "scm":
        model = create_scm(info.arch, info.num_classes, CalibrationSettings.from_dict(info.scm), **info.timm_kwargs)
    else:
        model = create_tscam(info.arch, info.num_classes, head_kind=info.head_kind, **info.timm_kwargs)
    model.info = info
    return model


def family_of(model: nn.Module) -> Family:
    if isinstance(model, SCM):
        return "scm"
    return "cnn_cam" if isinstance(model, CNNCAM) else "tscam"


def check_family(info: ModelInfo, wanted: Family | None, source: str) -> None:
    """Refuse a checkpoint of another family than the caller can use, saying which it is. An SCM
    checkpoint serves where TS-CAM is wanted: at inference it is one (``metadata.SERVES_AS``)."""
    if wanted is not None and wanted not in (info.family, SERVES_AS.get(info.family)):
        raise CheckpointError(f"{source} is a {FAMILY_LABELS[info.family]} checkpoint ({info.arch}), "
                              f"but a {FAMILY_LABELS[wanted]} model is needed here")


def save_checkpoint(model: TSCAM | CNNCAM, info: ModelInfo, path: str | Path) -> Path:
    """Write weights and metadata to ``path`` atomically: a crash leaves the old file intact."""
    if family_of(model) != info.family:
        raise CheckpointError(f"{path}: the metadata says {FAMILY_LABELS[info.family]} but the model is "
                              f"{FAMILY_LABELS[family_of(model)]}; set ModelInfo(family=...)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda temporary: save_file(tensors, temporary, metadata={METADATA_KEY: info.to_json()}))


Shapes = dict[str, tuple[int, ...]]


def read_checkpoint(path: str | Path) -> tuple[ModelInfo, dict[str, Tensor]]:
    """Metadata and weights of a tscam ``.safetensors`` file.

    The metadata is checked against the tensor shapes in the file's header before any tensor
    is read or any model built (``check_fits``).
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if METADATA_KEY not in metadata:
                raise CheckpointError(f"{path}: a safetensors file without tscam metadata; "
                                      "pass it as timm weights (timm:NAME?file=...) instead")
            info = ModelInfo.from_json(metadata[METADATA_KEY], source=str(path))
            check_fits(info, {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}, str(path))
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path}: damaged or not a safetensors file ({error})") from error
    return info, state


def check_fits(info: ModelInfo, shapes: Shapes, source: str) -> None:
    """Refuse metadata that does not describe the tensors of its file, naming the field.

    The model is built on the meta device (shapes, no memory), so no metadata can make the
    loader allocate more than the file's own tensors hold.
    """
    head = shapes.get("head.weight")
    if head and head[0] != info.num_classes:
        raise CheckpointError(f"{source}: metadata field num_classes is {info.num_classes:,}, but the file's "
                              f"head.weight is for {head[0]:,} classes")
    depth = info.timm_kwargs.get("depth")
    blocks = {int(m.group(1)) for key in shapes if (m := re.match(r"blocks\.(\d+)\.", key))}
    if info.family != "cnn_cam" and depth is not None and depth != len(blocks):
        raise CheckpointError(f"{source}: metadata field timm_kwargs.depth is {depth!r}, but the file holds "
                              f"{len(blocks)} blocks")
    try:
        with torch.device("meta"):
            model = build_model(info)
    except (ValueError, TypeError, RuntimeError, AssertionError) as error:  # metadata naming no buildable timm model
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{source}: cannot build the model it describes ({error_summary(error)})") from error
    problems = fit_problems({key: tuple(value.shape) for key, value in model.state_dict().items()}, shapes)
    if problems:
        raise CheckpointError(f"{source}: its tensors do not fit the model its metadata describes (arch "
                              f"{info.arch}, timm_kwargs {json.dumps(info.timm_kwargs)}); {problems}")
    check_input_size(info, model, source)


def check_input_size(info: ModelInfo, model: TSCAM | CNNCAM, source: str) -> None:
    """A TS-CAM input must be whole tokens, at most MAX_GRID_RATIO times the side of its position grid."""
    if not isinstance(model, TSCAM):
        return
    input_size = info.transform.input_size
    trained = tuple(grid * patch for grid, patch in zip(model.pos_grid, model.patch_size, strict=True))
    shown = f"{input_size[0]}x{input_size[1]}"
    if any(side % patch for side, patch in zip(input_size, model.patch_size, strict=True)):
        raise CheckpointError(f"{source}: metadata field preprocess.input_size {shown} is not a whole number of "
                              f"the model's {model.patch_size[0]}x{model.patch_size[1]}-pixel tokens")
    if any(side > MAX_GRID_RATIO * limit for side, limit in zip(input_size, trained, strict=True)):
        raise CheckpointError(f"{source}: metadata field preprocess.input_size {shown} is over {MAX_GRID_RATIO} "
                              f"times the {trained[0]}x{trained[1]} pixels of the file's position embedding")


def fit_problems(expected: Shapes, found: Shapes) -> str:
    """The keys of ``found`` that are missing, unexpected or of another shape than ``expected``, as text."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong_shape = [f"{key} (checkpoint {found[key]}, model {expected[key]})"
                   for key in sorted(set(expected) & set(found)) if found[key] != expected[key]]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong_shape)):
        if keys:
            shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
            problems.append(f"{label}: {shown}")
    return "; ".join(problems)


def load_state(model: TSCAM | CNNCAM, state: dict[str, Tensor], source: str) -> None:
    """Load weights, naming every key that is missing, unexpected or of another shape."""
    problems = fit_problems({key: tuple(value.shape) for key, value in model.state_dict().items()},
                            {key: tuple(value.shape) for key, value in state.items()})
    if problems:
        raise CheckpointError(f"{source} does not fit this model; {problems}")
    model.load_state_dict(state)


def check_finite(tensors: Iterable[tuple[str, Tensor]], source: str) -> None:
    """Refuse weights holding NaN or infinite values: every score they give would be NaN."""
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{source}: tensor {name} holds {count:,} NaN or infinite values; "
                                  "these weights cannot give scores")


def check_weights_file(path: Path) -> None:
    """Refuse a file that holds no weights, with its reason, before timm reads it (timm's own errors
    say 'list index out of range'); ``.safetensors`` files are checked from their header alone."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a weights file")
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    if path.suffix == ".safetensors":  # as timm decides how to read it
        try:
            with safe_open(str(path), framework="pt"):
                return
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path}: not a weights file, or a damaged one ({error_summary(error)})") from error
    official_state_dict(read_torch_file(path), str(path))


def read_torch_file(path: str | Path) -> Any:
    """``torch.load`` that only accepts tensors and plain containers, with errors that say why."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointError(f"{path}: an empty file, not a weights file")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found is None:  # no forbidden global named: a damaged stream of pickle opcodes, or not a pickle at all
            reason = re.search(r"WeightsUnpickler error: (.*?)(?:\s+Check the documentation|$)", str(error), re.S)
            raise CheckpointError(f"{path}: not a weights file, or a damaged one "
                                  f"({error_summary(reason.group(1) if reason else error)})") from error
        raise CheckpointError(
            f"{path}: refused, it needs code to unpickle ({found.group(1)}); only weights-only files are loaded"
        ) from error
    except Exception as error:  # damaged bytes make torch's unpickler fail in many ways (KeyError, struct.error, ...)
        raise CheckpointError(f"{path}: not a weights file, or a damaged or truncated one "
                              f"({type(error).__name__}: {error_summary(error)})") from error


def error_summary(error: BaseException | str, limit: int = 600) -> str:
    """An exception's text on one line, capped: library errors can run to paragraphs."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def strip_prefix(state: dict[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    return {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in state.items()}


_DEIT_NAMES = {192: "deit_tiny", 384: "deit_small", 768: "deit_base"}


def infer_official_info(state: dict[str, Tensor], source: str = "") -> ModelInfo:
    """Architecture of an official TS-CAM state dict, read from its tensor shapes."""
    needed = ("pos_embed", "patch_embed.proj.weight", "head.weight")
    absent = [key for key in needed if key not in state]
    if absent:
        raise CheckpointError(f"{source}: not a TS-CAM state dict, it lacks {', '.join(absent)}")
    head = state["head.weight"]
    if head.ndim != 4:
        raise CheckpointError(f"{source}: head.weight has shape {tuple(head.shape)}, TS-CAM's is C x D x 3 x 3")
    for key, ndim in (("pos_embed", 3), ("patch_embed.proj.weight", 4), ("blocks.0.mlp.fc1.weight", 2)):
        if key not in state or state[key].ndim != ndim:
            found = f"has shape {tuple(state[key].shape)}" if key in state else "is missing"
            raise CheckpointError(f"{source}: not a TS-CAM state dict, {key} {found}")
    patch_weight = state["patch_embed.proj.weight"]
    embed_dim = int(patch_weight.shape[0])
    patch_size = int(patch_weight.shape[-1])
    depth = len({int(m.group(1)) for key in state if (m := re.match(r"blocks\.(\d+)\.", key))})
    grid_tokens = int(state["pos_embed"].shape[1]) - 1
    grid = round(grid_tokens ** 0.5)
    if grid * grid != grid_tokens:
        raise CheckpointError(f"{source}: pos_embed has {grid_tokens} patch positions, not a square grid")
    img_size = grid * patch_size
    mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim
    kwargs: dict[str, Any] = {}
    arch = f"{_DEIT_NAMES.get(embed_dim, '')}_patch16_{img_size}"
    standard = embed_dim in _DEIT_NAMES and patch_size == 16 and img_size in (224, 384) and depth == 12 and mlp_ratio == 4.0
    standard = standard and timm.is_model(arch)  # timm has no deit_tiny/deit_small at 384
    if not standard:
        arch = "vit_base_patch16_224"
        kwargs = {
            "embed_dim": embed_dim, "depth": depth, "num_heads": infer_num_heads(embed_dim),
            "patch_size": patch_size, "img_size": img_size, "mlp_ratio": mlp_ratio,
            "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        }
    return ModelInfo(
        arch=arch, num_classes=int(head.shape[0]), timm_kwargs=kwargs,
        preprocess=Preprocess((img_size, img_size), (img_size, img_size), IMAGENET_MEAN, IMAGENET_STD).to_config(),
        recipe={"origin": "official TS-CAM release"}, source=source,
    )


def official_state_dict(loaded: Any, source: str) -> dict[str, Tensor]:
    """The state dict inside an official release file (``{'state_dict': ...}``, or bare)."""
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    elif isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise CheckpointError(f"{source}: no state dict of tensors found (expected a dict with 'state_dict')")
    return strip_prefix(loaded)
