"""Field-by-field checks of a checkpoint's JSON metadata, done once when the file is read.

A checkpoint comes from anywhere. A field of the wrong type or an absurd size is refused here
with one CheckpointError naming the file and the field, instead of failing later as a
TypeError inside timm, the demo or the dashboard, or as gigabytes of allocation.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from .errors import CheckpointError
from .explanation import VARIANT_LABELS
from .scm import CalibrationSettings

#: Model families a checkpoint can hold: TS-CAM on a ViT, CAM on a CNN (Table 5's baseline), or SCM
#: (Bai et al. 2022), TS-CAM trained through a spatial calibration module.
Family = Literal["tscam", "cnn_cam", "scm"]
FAMILY_LABELS: dict[str, str] = {"tscam": "TS-CAM", "cnn_cam": "CNN CAM", "scm": "SCM"}
#: Families whose models are another family's at inference: SCM drops its module, leaving TS-CAM.
SERVES_AS: dict[str, str] = {"scm": "tscam"}
HEAD_KINDS = ("conv", "linear")

#: Upper bounds on what metadata may claim; the file's own tensors bound the rest.
MAX_CLASSES = 100_000  # ImageNet-21k has 21,843
MAX_INPUT_SIDE = 1024  # model input, pixels a side
MAX_RESIZE_SIDE = 2048  # resize before the center crop, pixels a side

#: A timm model name, optionally with its pretrained tag: no ``hf-hub:`` or ``local-dir:`` address,
#: with which timm would fetch a configuration from the network or the server's disk.
ARCH_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: Keyword arguments with which timm (or create_tscam) would read weights from a path or the network.
LOADING_KWARGS = ("pretrained", "pretrained_file", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                  "cache_dir")


def checked_fields(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The ModelInfo fields held by parsed metadata ``data``, every one checked.

    Keys this version does not know are left out (a newer writer may add some); ``source``
    is never taken from the file.
    """
    fields = _Fields(data, source)
    num_classes = fields.integer("num_classes", 1, MAX_CLASSES)
    checked: dict[str, Any] = {
        "arch": fields.arch(),
        "num_classes": num_classes,
        "timm_kwargs": fields.mapping("timm_kwargs", {}),
        "head_kind": fields.choice("head_kind", HEAD_KINDS, "conv"),
        "class_names": fields.class_names(num_classes),
        "preprocess": fields.preprocess(),
        "recipe": fields.mapping("recipe", {}),
        "evaluation": fields.evaluation(),
        "family": fields.choice("family", tuple(FAMILY_LABELS), "tscam"),  # absent before CNN CAM existed
    }
    checked["scm"] = fields.scm(checked["family"])
    loading = [key for key in LOADING_KWARGS if key in checked["timm_kwargs"]]
    if loading:
        raise fields.error(f"timm_kwargs.{loading[0]}", "is refused: a checkpoint carries its own weights, it "
                                                         "cannot point the model builder at other files")
    return checked


def check_sides(size: Any, field: str, limit: int, source: str) -> tuple[int, int]:
    """(height, width) of a size given as one int or a pair, each within 1..``limit`` pixels."""
    pair = [size, size] if _is_int(size) else size
    if not isinstance(pair, list) or len(pair) != 2 or not all(_is_int(side) for side in pair):
        raise CheckpointError(f"{source}: metadata field {field} must be a size in pixels (an integer or "
                              f"[height, width]), not {_shown(size)}")
    if not all(1 <= side <= limit for side in pair):
        raise CheckpointError(f"{source}: metadata field {field} is {pair[0]}x{pair[1]}, outside 1..{limit} "
                              "pixels a side")
    return pair[0], pair[1]


class _Fields:
    """One metadata object and the file it came from, so that each error names both."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data = data
        self.source = source

    def error(self, field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.source}: metadata field {field} {problem}")

    def required(self, field: str) -> Any:
        if field not in self.data:
            raise self.error(field, "is missing")
        return self.data[field]

    def arch(self) -> str:
        value = self.required("arch")
        if not isinstance(value, str) or not ARCH_NAME.fullmatch(value):
            raise self.error("arch", f"must be a timm model name (letters, digits, '_', '.', '-'), not {_shown(value)}")
        return value

    def integer(self, field: str, low: int, high: int) -> int:
        value = self.required(field)
        if not _is_int(value):
            raise self.error(field, f"must be an integer, not {_shown(value)}")
        if not low <= value <= high:
            raise self.error(field, f"is {value:,}, outside {low:,}..{high:,}")
        return value

    def choice(self, field: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.data.get(field, default)
        if value not in allowed or not isinstance(value, str):
            raise self.error(field, f"is {_shown(value)}; this tscam knows {', '.join(allowed)}")
        return value

    def mapping(self, field: str, default: dict[str, Any]) -> dict[str, Any]:
        value = self.data.get(field, default)
        if not isinstance(value, dict):
            raise self.error(field, f"must be an object, not a JSON {json_type(value)}")
        return value

    def scm(self, family: str) -> dict[str, Any]:
        """SCM's settings: valid ones for an SCM checkpoint, none for another family's."""
        settings = self.mapping("scm", {})
        if family != "scm":
            if settings:
                raise self.error("scm", f"holds SCM settings, but the checkpoint's family is {family}")
            return settings
        try:
            return CalibrationSettings.from_dict(settings).to_dict()
        except (TypeError, ValueError) as error:
            raise self.error("scm", f"is refused: {error}") from error

    def class_names(self, num_classes: int) -> list[str]:
        names = self.data.get("class_names", [])
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise self.error("class_names", "must be a list of strings")
        if names and len(names) != num_classes:
            raise self.error("class_names", f"has {len(names)} names for num_classes {num_classes}")
        return names

    def preprocess(self) -> dict[str, Any]:
        config = self.mapping("preprocess", {"input_size": 224})
        input_size = check_sides(config.get("input_size", 224), "preprocess.input_size", MAX_INPUT_SIDE, self.source)
        check_sides(config.get("resize", list(input_size)), "preprocess.resize", MAX_RESIZE_SIDE, self.source)
        for key, low in (("mean", -math.inf), ("std", 0.0)):
            values = config.get(key, [0.5, 0.5, 0.5])
            if not isinstance(values, list) or len(values) != 3 or not all(
                    _is_number(v) and math.isfinite(v) and v > low for v in values):
                bound = "positive" if low == 0.0 else "finite"
                raise self.error(f"preprocess.{key}", f"must be 3 {bound} numbers (one per channel), not "
                                                      f"{_shown(values)}")
        return config

    def evaluation(self) -> dict[str, Any]:
        evaluation = self.mapping("evaluation", {})
        validation = evaluation.get("validation", {})
        if not isinstance(validation, dict):
            raise self.error("evaluation.validation", f"must be an object, not a JSON {json_type(validation)}")
        for field, holder in (("evaluation.validation.best_threshold", validation),
                              ("evaluation.best_threshold", evaluation)):
            value = holder.get("best_threshold", 0.0)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise self.error(field, f"must be a number in 0..1, not {_shown(value)}")
        self.map_scores(validation.get("maps", {}))
        return evaluation

    def map_scores(self, maps: Any) -> None:
        """evaluation.validation.maps: each map variant's best validation score and its threshold."""
        if not isinstance(maps, dict):
            raise self.error("evaluation.validation.maps", f"must be an object, not a JSON {json_type(maps)}")
        for variant, scores in maps.items():
            field = f"evaluation.validation.maps.{variant}"
            if variant not in VARIANT_LABELS:
                raise self.error(field, f"is not a map variant (choose from {', '.join(VARIANT_LABELS)})")
            if not isinstance(scores, dict):
                raise self.error(field, f"must be an object, not a JSON {json_type(scores)}")
            for key in ("best_threshold", "gt_known_loc_best"):
                value = scores.get(key)
                if not _is_number(value) or not 0.0 <= value <= 1.0:
                    raise self.error(f"{field}.{key}", f"must be a number in 0..1, not {_shown(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
