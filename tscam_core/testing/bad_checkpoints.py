"""The issue-20 corpus of hostile checkpoints: a real small checkpoint with its metadata rewritten.

Each case names what ``load_model``'s one-line refusal must name (the metadata field, the
tensor, or the kind of file), so the tests and ``scripts/reliability_corpus.py`` judge every
entry point on the same files by the same rule.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..checkpoint import METADATA_KEY, ModelInfo, save_checkpoint
from ..cnn_cam import CNNCAM
from ..model import TSCAM
from .bad_files import BadFile, Expectation


class HostileCheckpoint(NamedTuple):
    name: str  # a file name with the extension a user would give it
    data: bytes
    names: str  # text the refusal must contain: the field or tensor at fault ("" for a good file)
    why: str

    def as_bad_file(self) -> BadFile:
        return BadFile(self.name, self.data, Expectation("error" if self.names else "model", why=self.why))


def header_metadata(data: bytes) -> str:
    """The tscam metadata text of a safetensors file's bytes."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size])["__metadata__"][METADATA_KEY]


def with_metadata(data: bytes, text: str) -> bytes:
    """``data`` (a safetensors file) with its tscam metadata replaced by ``text``; tensors untouched."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    header["__metadata__"][METADATA_KEY] = text
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors pads its header to keep the data 8-byte aligned
    return len(encoded).to_bytes(8, "little") + encoded + data[8 + size:]


def _edited(metadata: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``metadata`` with dotted keys set ("preprocess__std" is preprocess.std); None deletes."""
    edited = copy.deepcopy(metadata)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        holder = edited
        for key in parents:
            holder = holder.setdefault(key, {})
        if value is None:
            holder.pop(last, None)
        else:
            holder[last] = value
    return edited


def _metadata_cases(metadata: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    """(name, what the error names, why, new metadata value) for each hostile rewrite."""
    kwargs = metadata["timm_kwargs"]
    return [
        ("metadata_list", "JSON list", "metadata a list, not an object", [metadata]),
        ("metadata_number", "JSON number", "metadata a number", 5),
        ("arch_number", "field arch", "arch: 5", _edited(metadata, arch=5)),
        ("arch_missing", "field arch", "no arch", _edited(metadata, arch=None)),
        ("arch_hub_address", "field arch", "an hf-hub: name makes timm fetch a config",
         _edited(metadata, arch="hf-hub:attacker/model")),
        ("num_classes_1e8", "field num_classes", "100,000,000 classes claimed", _edited(metadata, num_classes=10**8)),
        ("num_classes_text", "field num_classes", "num_classes: \"5\"", _edited(metadata, num_classes="5")),
        ("num_classes_not_the_file", "field num_classes", "50,000 classes, the file's head has 5",
         _edited(metadata, num_classes=50_000, class_names=[])),
        ("vit_4096_wide_24_blocks", "field timm_kwargs.depth", "a 4096-wide 24-block model claimed",
         _edited(metadata, timm_kwargs={**kwargs, "embed_dim": 4096, "depth": 24, "num_heads": 32})),
        ("vit_4096_wide", "timm_kwargs", "a 4096-wide model claimed",
         _edited(metadata, timm_kwargs={**kwargs, "embed_dim": 4096, "num_heads": 32})),
        ("img_size_100000", "pos_embed", "timm img_size 100000 claimed",
         _edited(metadata, timm_kwargs={**kwargs, "img_size": 100_000})),
        ("input_size_100000", "field preprocess.input_size", "a 100000x100000 input claimed",
         _edited(metadata, preprocess__input_size=[100_000, 100_000], preprocess__resize=[100_000, 100_000])),
        ("input_size_not_the_grid", "field preprocess.input_size", "3 times the position grid",
         _edited(metadata, preprocess__input_size=[96, 96], preprocess__resize=[96, 96])),
        ("input_size_text", "field preprocess.input_size", "input_size: \"abc\"",
         _edited(metadata, preprocess__input_size="abc")),
        ("resize_50000", "field preprocess.resize", "resize to 50000 a side", _edited(metadata, preprocess__resize=50_000)),
        ("std_zero", "field preprocess.std", "division by zero", _edited(metadata, preprocess__std=[0, 0, 0])),
        ("preprocess_list", "field preprocess", "preprocess a list", _edited(metadata, preprocess=[224])),
        ("timm_kwargs_list", "field timm_kwargs", "timm_kwargs a list", _edited(metadata, timm_kwargs=[1])),
        ("timm_kwargs_pretrained_file", "field timm_kwargs.pretrained_file", "points the builder at /etc/passwd",
         _edited(metadata, timm_kwargs={**kwargs, "pretrained_file": "/etc/passwd"})),
        ("timm_kwargs_checkpoint_path", "field timm_kwargs.checkpoint_path", "points timm at another file",
         _edited(metadata, timm_kwargs={**kwargs, "checkpoint_path": "/etc/passwd"})),
        ("evaluation_list", "field evaluation", "evaluation a list", _edited(metadata, evaluation=[0.5])),
        ("threshold_text", "field evaluation.validation.best_threshold", "best_threshold: \"0.3\"",
         _edited(metadata, evaluation={"validation": {"best_threshold": "0.3"}})),
        ("map_score_text", "field evaluation.validation.maps.tscam.gt_known_loc_best", "a map's score: \"high\"",
         _edited(metadata, evaluation={"validation": {"maps": {"tscam": {"best_threshold": 0.3,
                                                                       "gt_known_loc_best": "high"}}}})),
        ("map_unknown", "field evaluation.validation.maps.gradcam", "a map that is no variant",
         _edited(metadata, evaluation={"validation": {"maps": {"gradcam": {}}}})),
        ("class_names_number", "field class_names", "class_names: 7", _edited(metadata, class_names=7)),
        ("family_unknown", "field family", "family: \"rnn\"", _edited(metadata, family="rnn")),
        ("head_kind_number", "field head_kind", "head_kind: 3", _edited(metadata, head_kind=3)),
        ("recipe_text", "field recipe", "recipe a string", _edited(metadata, recipe="fast")),
        ("format_version_true", "field format_version", "format_version: true", _edited(metadata, format_version=True)),
    ]


def hostile_checkpoints(model: TSCAM | CNNCAM, info: ModelInfo) -> list[HostileCheckpoint]:
    """The corpus, built from a real checkpoint of ``model`` (a tiny TS-CAM) written by save_checkpoint."""
    with tempfile.TemporaryDirectory() as folder:
        good = save_checkpoint(model, info, Path(folder) / "good.safetensors").read_bytes()
        weights = {}
        for name, key, value in (("nan_weights", "blocks.0.attn.qkv.weight", float("nan")),
                                 ("inf_weights", "head.bias", float("inf"))):
            damaged = copy.deepcopy(model)
            with torch.no_grad():
                damaged.state_dict()[key].view(-1)[0] = value
            weights[name] = (key, save_checkpoint(damaged, info, Path(folder) / "w.safetensors").read_bytes())
    metadata = json.loads(header_metadata(good))
    cases = [HostileCheckpoint("good.safetensors", good, "", "the untouched checkpoint")]
    cases += [HostileCheckpoint(f"{name}.safetensors", with_metadata(good, json.dumps(value)), names, why)
              for name, names, why, value in _metadata_cases(metadata)]
    cases += [
        HostileCheckpoint("nested_json.safetensors", with_metadata(good, "[" * 100_000), "not valid JSON",
                          "metadata nested 100,000 deep"),
        *(HostileCheckpoint(f"{name}.safetensors", data, key, f"{key} holds {name.split('_')[0]}")
          for name, (key, data) in weights.items()),
        HostileCheckpoint("truncated.safetensors", good[: len(good) // 2], "not a safetensors file", "cut in half"),
        HostileCheckpoint("text.safetensors", b"not weights\n" * 40, "not a safetensors file", "text"),
        HostileCheckpoint("empty.pth", b"", "empty file", "zero bytes"),
        HostileCheckpoint("text.pth", b"root:x:0:0:root:/root:/bin/bash\n", "not a weights file", "a passwd line"),
        HostileCheckpoint("garbage.pth", bytes(range(256)) * 8, "not a weights file", "pickle-free garbage"),
    ]
    return cases


def loader(folder: Path, load: Callable[[Path], Any]) -> Callable[[HostileCheckpoint], Callable[[bytes], Any]]:
    """For ``bad_files.probe``: a handler per case that writes its bytes under its name and loads that file."""
    def for_case(case: HostileCheckpoint) -> Callable[[bytes], Any]:
        def handler(data: bytes) -> Any:
            path = folder / case.name
            path.write_bytes(data)
            return load(path)
        return handler
    return for_case


def check_model(case: BadFile, loaded: Any) -> tuple[str, str]:
    """``probe``'s check for a loader that must return a model."""
    if isinstance(loaded, (TSCAM, CNNCAM)):
        return "model", f"{type(loaded).__name__} with {loaded.num_classes} classes"
    return "crash", f"the loader returned {type(loaded).__name__}, not a model"


__all__ = ["HostileCheckpoint", "check_model", "header_metadata", "hostile_checkpoints", "loader", "with_metadata"]
