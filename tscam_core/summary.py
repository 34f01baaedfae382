"""summary.json as typed, frozen values (docs/results-format.md), checked field by field when a run is read.

``parse_summary`` is the one place that knows the file's layout: every reader (the dashboard, the
docs) takes a ``Summary`` and reads attributes, so a run whose fields have the wrong type is refused
once, by name (``summary.json: metrics.top1_loc must be ...``), instead of failing later in a view.
``METRICS``, ``CURVES``, ``CRITERIA`` and ``ERROR_TYPES`` are the catalogues the readers iterate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import ResultsError
from .explanation import VARIANT_LABELS, MapSpec
from .methods import COST_LABELS
from .methods.tscam import from_spec
from .metrics import CORRECT
from .metrics import ERROR_TYPES as FAILURE_TYPES

SUMMARY_FILE = "summary.json"

#: Algorithm 1's verdicts in the order of the paper's Table 7: Top-1 localized, then each failure
#: (``FAILURE_TYPES``, the keys of ``metrics.error_analysis``).
ERROR_TYPES: tuple[str, ...] = (CORRECT, *FAILURE_TYPES)
ERROR_LABELS: dict[str, str] = {
    "correct": "Correct", "cls": "Classification", "m_ins": "Multi-instance",
    "part": "Part", "more": "More", "ot": "Others",
}
#: What each verdict means, in one line, wherever a name is shown (Algorithm 1, tscam_core.metrics.error_type).
ERROR_MEANINGS: dict[str, str] = {
    "correct": "right top-1 class and a box of IoU > 0.5 with a GT box",
    "cls": "the top-1 class is wrong",
    "m_ins": "the box spans several objects (IoG > 0.3 with more than one GT box)",
    "part": "the box covers only part of the object (IoP > 0.5)",
    "more": "the box covers the object and much background (IoG >= 0.7)",
    "ot": "any other miss: the box is off the object",
}


def error_legend() -> str:
    """The error types, each with its meaning, as one Markdown line per type."""
    return "\n".join(f"- **{ERROR_LABELS[kind]}**: {ERROR_MEANINGS[kind]}" for kind in ERROR_TYPES)

#: The per-image localization criteria (boolean columns of per_image.parquet) and their labels.
CRITERIA: dict[str, str] = {"top1_loc": "Top-1 Loc", "top5_loc": "Top-5 Loc", "gt_known": "GT-known Loc"}


@dataclass(frozen=True)
class Metric:
    """One scalar of ``metrics``, by its dotted path there, with the label every table gives it."""

    path: str
    label: str
    required: bool = False  # every run has it (it may still be null: no image to measure it on)


#: The scalar metrics, in the order tables list them.
METRICS: tuple[Metric, ...] = (
    Metric("top1_cls", "Top-1 Cls", True),
    Metric("top5_cls", "Top-5 Cls", True),
    Metric("top1_loc", "Top-1 Loc", True),
    Metric("top5_loc", "Top-5 Loc", True),
    Metric("gt_known_loc", "GT-known Loc", True),
    Metric("maxboxacc_v2.iou_30", "MaxBoxAccV2 IoU 0.3"),
    Metric("maxboxacc_v2.iou_50", "MaxBoxAccV2 IoU 0.5"),
    Metric("maxboxacc_v2.iou_70", "MaxBoxAccV2 IoU 0.7"),
    Metric("maxboxacc_v2.mean", "MaxBoxAccV2 mean"),
    Metric("pxap", "PxAP"),
)
REQUIRED_METRICS: tuple[str, ...] = tuple(m.path for m in METRICS if m.required)
#: The curves of ``metrics`` and the name of each one's x axis.
CURVES: dict[str, str] = {"loc_vs_iou": "iou_thresholds", "loc_vs_cam_threshold": "cam_thresholds",
                          "layer_count": "counts"}
#: The y series a curve may hold, each a fraction per x (null where no image measured it).
CURVE_SERIES: tuple[str, ...] = ("gt_known", "top1", "top5")

Fraction = float | None
T = TypeVar("T")


@dataclass(frozen=True)
class CheckpointIdentity:
    source: str | None
    class_names: tuple[str, ...]
    arch: str | None = None
    num_classes: int | None = None
    sha256: str | None = None
    family: str = "tscam"
    depth: int | None = None


@dataclass(frozen=True)
class DatasetIdentity:
    path: str
    num_images: int
    kind: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class RunMethod:
    """The localization method a run scored (``tscam_core.methods``), as the run recorded it."""

    name: str  # ``methods.get`` reads it back: "rollout", "tscam@last:4", ...
    label: str
    cost: str  # a key of methods.COST_LABELS

    @classmethod
    def of_map(cls, spec: MapSpec) -> RunMethod:
        """The map's own method: what results written before runs recorded their method scored."""
        return cls(**from_spec(spec).record())


@dataclass(frozen=True)
class RunSettings:
    """The settings the dashboard reads back; the file holds more (batch size, pool), for the record."""

    cam_threshold: float
    method: RunMethod
    map: MapSpec | None  # the map the run scored (settings.variant, .layers, .signed_class_maps); None for a
    # method that is no view of the explanation (rollout, the gradient methods)


@dataclass(frozen=True)
class MaxBoxAcc:
    iou_30: Fraction
    iou_50: Fraction
    iou_70: Fraction
    mean: Fraction


@dataclass(frozen=True)
class Curve:
    """Accuracy against one setting: ``x`` and, per criterion of ``CURVE_SERIES`` present, one value per x."""

    x: tuple[float, ...]
    series: dict[str, tuple[Fraction, ...]]


@dataclass(frozen=True)
class PerClass:
    class_names: tuple[str, ...]
    gt_known: tuple[Fraction, ...]
    top1_cls: tuple[Fraction, ...]
    count: tuple[int, ...]


@dataclass(frozen=True)
class Metrics:
    top1_cls: Fraction
    top5_cls: Fraction
    top1_loc: Fraction
    top5_loc: Fraction
    gt_known_loc: Fraction
    error_analysis: dict[str, Fraction]
    variants: dict[str, dict[str, Fraction]]
    curves: dict[str, Curve]  # by CURVES key; a curve the run lacks is absent
    maxboxacc_v2: MaxBoxAcc | None = None
    pxap: Fraction = None
    per_class: PerClass | None = None

    def value(self, metric: Metric) -> Fraction:
        """The catalogue's ``metric`` of this run; None where the run has none."""
        value: Any = self
        for part in metric.path.split("."):
            value = getattr(value, part, None)
        return value


@dataclass(frozen=True)
class Summary:
    name: str
    checkpoint: CheckpointIdentity
    dataset: DatasetIdentity
    settings: RunSettings
    metrics: Metrics
    images_per_second: float | None = None
    created: str | None = None


class _Bad(Exception):
    """A field of the wrong kind: turned into one ResultsError naming the file and the field."""

    def __init__(self, field: str, expected: str, value: Any) -> None:
        self.field, self.expected, self.value = field, expected, value


_MISSING = object()


def parse_summary(data: Any, folder: str | Path) -> Summary:
    """The typed summary of a summary.json's contents; ResultsError naming the first field that is wrong."""
    try:
        return _summary(_object(data, "the file"))
    except _Bad as bad:
        if bad.value is _MISSING:
            raise ResultsError(f"{SUMMARY_FILE} lacks {bad.field}", folder) from None
        raise ResultsError(f"{SUMMARY_FILE}: {bad.field} must be {bad.expected}, got {_shown(bad.value)}",
                           folder) from None


def _summary(data: Mapping[str, Any]) -> Summary:
    checkpoint = _object(_field(data, "checkpoint"), "checkpoint")
    dataset = _object(_field(data, "dataset"), "dataset")
    settings = _object(_field(data, "settings"), "settings")
    _object(_field(data, "versions"), "versions")
    names = _items(_field(checkpoint, "class_names", "checkpoint."), "checkpoint.class_names", _text)
    num_classes = _count(checkpoint.get("num_classes"), "checkpoint.num_classes", optional=True)
    if num_classes is not None and num_classes != len(names):
        raise _Bad("checkpoint.class_names", f"a list of {num_classes} names (checkpoint.num_classes)", names)
    return Summary(
        name=_text(_field(data, "name"), "name"),
        checkpoint=CheckpointIdentity(
            source=_text(_field(checkpoint, "source", "checkpoint."), "checkpoint.source", optional=True),
            class_names=names, num_classes=num_classes,
            arch=_text(checkpoint.get("arch"), "checkpoint.arch", optional=True),
            sha256=_text(checkpoint.get("sha256"), "checkpoint.sha256", optional=True),
            family=_text(checkpoint.get("family", "tscam"), "checkpoint.family"),
            depth=_count(checkpoint.get("depth"), "checkpoint.depth", optional=True)),
        dataset=DatasetIdentity(
            path=_text(_field(dataset, "path", "dataset."), "dataset.path"),
            num_images=_count(_field(dataset, "num_images", "dataset."), "dataset.num_images"),
            kind=_text(dataset.get("kind"), "dataset.kind", optional=True),
            split=_text(dataset.get("split"), "dataset.split", optional=True)),
        settings=_settings(settings),
        metrics=_metrics(_object(_field(data, "metrics"), "metrics")),
        images_per_second=_number(data.get("images_per_second"), "images_per_second", optional=True),
        created=_text(data.get("created"), "created", optional=True),
    )


def _settings(settings: Mapping[str, Any]) -> RunSettings:
    """A run's settings; one without ``method`` (format 2) scored its map's own method, and one whose
    method is not a map of the explanation records no map."""
    recorded = _optional_object(settings.get("method"), "settings.method")
    spec = _map(settings) if recorded is None or "variant" in settings else None
    return RunSettings(
        cam_threshold=_fraction(_field(settings, "cam_threshold", "settings."), "settings.cam_threshold",
                                optional=False),
        method=RunMethod.of_map(spec) if recorded is None else _method(recorded), map=spec)


def _method(data: Mapping[str, Any]) -> RunMethod:
    name, label, cost = (_text(_field(data, key, "settings.method."), f"settings.method.{key}")
                         for key in ("name", "label", "cost"))
    if cost not in COST_LABELS:
        raise _Bad("settings.method.cost", f"one of {', '.join(map(repr, COST_LABELS))}", cost)
    return RunMethod(name, label, cost)


def _metrics(data: Mapping[str, Any]) -> Metrics:
    main = {key: _fraction(_field(data, key, "metrics."), f"metrics.{key}") for key in REQUIRED_METRICS}
    box = _optional_object(data.get("maxboxacc_v2"), "metrics.maxboxacc_v2")
    per_class = _optional_object(data.get("per_class"), "metrics.per_class")
    variants = _object(data.get("variants") or {}, "metrics.variants")
    return Metrics(
        **main,
        error_analysis=_fractions(data.get("error_analysis") or {}, "metrics.error_analysis"),
        variants={name: _fractions(values, f"metrics.variants.{name}") for name, values in variants.items()},
        curves={key: _curve(curve, key, x_key) for key, x_key in CURVES.items()
                if (curve := _optional_object(data.get(key), f"metrics.{key}")) is not None},
        maxboxacc_v2=None if box is None else MaxBoxAcc(
            *(_fraction(box.get(key), f"metrics.maxboxacc_v2.{key}") for key in ("iou_30", "iou_50", "iou_70", "mean"))),
        pxap=_fraction(data.get("pxap"), "metrics.pxap"),
        per_class=None if per_class is None else _per_class(per_class),
    )


def _curve(data: Mapping[str, Any], key: str, x_key: str) -> Curve:
    field = f"metrics.{key}"
    x = _items(data.get(x_key, []), f"{field}.{x_key}", _number)
    series = {}
    for name in CURVE_SERIES:
        if name in data:
            values = _items(data[name], f"{field}.{name}", _fraction)
            if len(values) != len(x):
                raise _Bad(f"{field}.{name}", f"a list of {len(x)} values (one per {x_key})", data[name])
            series[name] = values
    return Curve(x, series)


def _per_class(data: Mapping[str, Any]) -> PerClass:
    names = _items(data.get("class_names", []), "metrics.per_class.class_names", _text)
    columns = {key: _items(data.get(key, []), f"metrics.per_class.{key}", parse)
               for key, parse in (("gt_known", _fraction), ("top1_cls", _fraction), ("count", _count))}
    for key, values in columns.items():
        if len(values) != len(names):
            raise _Bad(f"metrics.per_class.{key}", f"a list of {len(names)} values (one per class name)", data[key])
    return PerClass(names, columns["gt_known"], columns["top1_cls"], columns["count"])


# ------------------------------------------------------------------ one kind of field each


def _field(data: Mapping[str, Any], key: str, prefix: str = "") -> Any:
    """A key the format requires: missing is reported as missing, not as a wrong type."""
    if key not in data:
        raise _Bad(prefix + key, "", _MISSING)
    return data[key]


def _object(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(field, "an object", value)
    return value


def _optional_object(value: Any, field: str) -> Mapping[str, Any] | None:
    return None if value is None else _object(value, field)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, field: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if not _is_number(value):
        raise _Bad(field, "a number" + (" or null" if optional else ""), value)
    return float(value)


def _fraction(value: Any, field: str, optional: bool = True) -> Fraction:
    if value is None and optional:
        return None
    if not (_is_number(value) and 0.0 <= value <= 1.0):
        raise _Bad(field, "a number in 0..1" + (" or null" if optional else ""), value)
    return float(value)


def _count(value: Any, field: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        raise _Bad(field, "a whole number of 0 or more" + (" or null" if optional else ""), value)
    return value


def _text(value: Any, field: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _Bad(field, "a string" + (" or null" if optional else ""), value)
    return value


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise _Bad(field, "true or false", value)
    return value


def _map(settings: Mapping[str, Any]) -> MapSpec:
    variant = _text(settings.get("variant", "tscam"), "settings.variant")
    layers = settings.get("layers")
    signed = _flag(settings.get("signed_class_maps", False), "settings.signed_class_maps")
    if variant not in VARIANT_LABELS:
        raise _Bad("settings.variant", f"one of {', '.join(VARIANT_LABELS)}", variant)
    try:
        return MapSpec.from_record({"variant": variant, "layers": layers, "signed_class_maps": signed})
    except (TypeError, ValueError) as error:
        raise _Bad("settings.layers", "null, 'first:k', 'last:k' or a list of block indices", layers) from error


def _items(value: Any, field: str, parse: Callable[[Any, str], T]) -> tuple[T, ...]:
    if not isinstance(value, list):
        raise _Bad(field, "a list", value)
    return tuple(parse(item, f"{field}[{index}]") for index, item in enumerate(value))


def _fractions(value: Any, field: str) -> dict[str, Fraction]:
    return {key: _fraction(item, f"{field}.{key}") for key, item in _object(value, field).items()}


def _shown(value: Any) -> str:
    """A JSON value as an error message names it: its kind, and the value when it is short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}" + ("…" if len(value) > 40 else "")
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} items"
    return "an object" if isinstance(value, dict) else type(value).__name__
