"""``load_model``: one entry point for every place a TS-CAM (or CNN CAM) model can come from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch

from .catalog import imagenet_names, official_names, placeholder_names
from .checkpoint import (
    Family,
    ModelInfo,
    build_model,
    check_family,
    check_finite,
    check_weights_file,
    error_summary,
    infer_official_info,
    load_state,
    official_state_dict,
    read_checkpoint,
    read_torch_file,
)
from .cnn_cam import CNNCAM
from .errors import CheckpointError
from .hub import cached_file, download, unreachable_reason
from .model import TSCAM, create_tscam
from .transforms import Preprocess

TIMM_PREFIX = "timm:"
HF_PREFIX = "hf://"


def load_model(
    source: str | Path,
    *,
    arch: str | None = None,
    timm_kwargs: dict[str, Any] | None = None,
    class_names: list[str] | None = None,
    device: str | torch.device = "cpu",
    family: Family | None = "tscam",
) -> TSCAM | CNNCAM:
    """A TS-CAM model in eval mode, its metadata at ``model.info``.

    ``source`` is a tscam ``.safetensors`` checkpoint; an official TS-CAM release file
    (``arch``/``timm_kwargs`` name its architecture, else it is inferred from the shapes);
    ``timm:NAME`` (a plain ImageNet classifier explained with its own head applied to every
    token, ``timm:NAME?file=PATH`` for local weights); or ``hf://owner/repo/path/in/repo``.
    ``family`` is the kind of model the caller can use: TS-CAM by default (the explorer and the
    dashboard need its attention), ``"cnn_cam"`` for the CNN baseline, None for either; a
    checkpoint of another family is refused with a CheckpointError naming it.
    """
    text = str(source)
    if text.startswith(TIMM_PREFIX):
        model = _from_timm(text[len(TIMM_PREFIX):])
        check_family(model.info, family, text)
    elif text.startswith(HF_PREFIX):
        return load_model(_download_from_hub(text), arch=arch, timm_kwargs=timm_kwargs,
                          class_names=class_names, device=device, family=family)
    else:
        model = _from_file(Path(source), arch, timm_kwargs, family)
    if class_names is not None:
        if len(class_names) != model.num_classes:
            raise CheckpointError(f"{len(class_names)} class names given for a {model.num_classes}-class model")
        model.info.class_names = list(class_names)
    return model.to(device).eval()


def _from_file(path: Path, arch: str | None, timm_kwargs: dict[str, Any] | None,
               family: Family | None) -> TSCAM | CNNCAM:
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        info, state = read_checkpoint(path)  # checks that the metadata fits the tensors
    else:
        state = official_state_dict(read_torch_file(path), str(path))
        info = infer_official_info(state, str(path))
        info.class_names = official_names(info.num_classes) or info.class_names
        if arch is not None:
            info.arch, info.timm_kwargs = arch, dict(timm_kwargs or {})
    check_family(info, family, str(path))
    check_finite(state.items(), str(path))
    try:
        model = build_model(info)
    except CheckpointError:
        raise
    except (ValueError, TypeError, RuntimeError) as error:  # an arch or timm_kwargs naming no buildable timm model
        raise CheckpointError(f"{path}: cannot build the model it describes ({error_summary(error)})") from error
    load_state(model, state, str(path))
    return model


def _from_timm(spec: str) -> TSCAM:
    name, _, query = spec.partition("?")
    weights = None
    if query:  # the path is taken verbatim: no URL decoding ('+', '%', '&' are path characters)
        if not query.startswith("file="):
            raise CheckpointError(f"{TIMM_PREFIX}{spec}: expected timm:NAME or timm:NAME?file=PATH")
        weights = query[len("file="):]
    if weights is not None:
        try:
            check_weights_file(Path(weights))
        except CheckpointError as error:
            raise CheckpointError(f"{TIMM_PREFIX}{spec}: {error}") from error
    else:
        weights = _cached_timm_weights(name, spec)
    try:
        model = create_tscam(name, num_classes=None, head_kind="linear", pretrained=True, pretrained_file=weights)
    except Exception as error:  # timm's loaders raise anything from RuntimeError to hub errors; name the source
        where = weights or "timm's pretrained weights"
        raise CheckpointError(f"{TIMM_PREFIX}{spec}: cannot load {where} ({error_summary(error)})") from error
    check_finite(model.state_dict().items(), f"{TIMM_PREFIX}{spec}")
    config = model_pretrained_config(name)
    size = tuple(config.get("input_size", (3, 224, 224))[1:])
    model.info = ModelInfo(
        arch=name, num_classes=model.num_classes, head_kind="linear",
        class_names=list(imagenet_names(model.num_classes) or placeholder_names(model.num_classes)),
        preprocess=Preprocess(size, size, tuple(config.get("mean")), tuple(config.get("std"))).to_config(),
        recipe={"origin": f"timm pretrained classifier {name}"}, source=f"{TIMM_PREFIX}{spec}",
    )
    return model


def model_pretrained_config(name: str) -> dict[str, Any]:
    return timm.get_pretrained_cfg(name).to_dict() if timm.get_pretrained_cfg(name) else {}


def _cached_timm_weights(name: str, spec: str) -> str | None:
    """None where the hub is reachable (timm downloads the weights); else the weights from the local
    cache, or one CheckpointError saying so and how to pass a local file."""
    reason = unreachable_reason()
    if reason is None:
        return None
    config = timm.get_pretrained_cfg(name) if timm.is_model(name) else None
    hub_id = getattr(config, "hf_hub_id", None)
    if hub_id:
        repo_id, _, revision = hub_id.partition("@")
        found = cached_file(repo_id, ("model.safetensors", "pytorch_model.bin"), revision or None)
        if found is not None:
            return found
    raise CheckpointError(
        f"{TIMM_PREFIX}{spec}: the Hugging Face Hub is unreachable ({reason}) and the weights are not in the "
        f"local cache; download them where the hub is reachable and pass {TIMM_PREFIX}{name}?file=PATH"
    )


def _download_from_hub(url: str) -> str:
    parts = url[len(HF_PREFIX):].split("/")
    if len(parts) < 3 or not all(parts):
        raise CheckpointError(f"{url}: expected hf://owner/repo/path/to/checkpoint")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        return download(repo_id, filename)
    except LookupError as error:
        raise CheckpointError(f"{url}: could not fetch from the Hugging Face Hub: {error}; download the file "
                              "where the hub is reachable and pass its local path instead") from error
    except Exception as error:  # the hub's own errors differ across versions; name the source
        raise CheckpointError(f"{url}: could not fetch from the Hugging Face Hub ({error})") from error
