"""The demo's examples: ``examples.json`` files read and checked once, each entry an image with its
ground truth (boxes and, for the models that know it, its class)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetError


@dataclass(frozen=True)
class GroundTruth:
    """What is known about an example: its boxes in original-image pixels and, maybe, its class."""

    boxes: np.ndarray
    class_index: int | None = None


@dataclass(frozen=True)
class Example:
    path: Path
    truth: GroundTruth
    class_name: str = ""



#: Keys an example may name its class by.
CLASS_KEYS = ("class", "class_name", "class_index")


@dataclass(frozen=True)
class ExampleSet:
    """The entries of one ``examples.json``: images for the models that know the classes they name."""

    source: Path
    entries: tuple[Any, ...]

    @classmethod
    def read(cls, path: str | Path) -> ExampleSet:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DatasetError(f"not readable JSON ({error})", str(path)) from error
        entries = data.get("examples") if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise DatasetError("expected a list of examples", str(path))
        examples = cls(path, tuple(entries))
        examples.examples([])  # every entry checked once, whatever model it is shown with
        return examples

    @property
    def files(self) -> list[Path]:
        return [self.source.parent / entry["file"] for entry in self.entries]

    def fits(self, class_names: Sequence[str]) -> bool:
        """Whether a model with ``class_names`` should offer these examples: it knows every class they
        name (a set that names none fits every model)."""
        return all(
            example.truth.class_index is not None
            for entry, example in zip(self.entries, self.examples(class_names), strict=True)
            if any(key in entry for key in CLASS_KEYS)
        )

    def examples(self, class_names: Sequence[str]) -> list[Example]:
        return [_example(entry, number, self.source, class_names) for number, entry in enumerate(self.entries, 1)]


def read_example_sets(folder: str | Path) -> list[ExampleSet]:
    """The example sets of ``folder``: its ``examples.json`` and those of its subfolders, in name order."""
    folder = Path(folder)
    paths = [folder / "examples.json", *sorted(folder.glob("*/examples.json"))]
    return [ExampleSet.read(path) for path in paths if path.is_file()]


def read_examples(folder: str | Path, class_names: Sequence[str]) -> list[Example]:
    """The demo's examples from ``folder/examples.json``; none when the file is absent.

    The file is a list (or ``{"examples": [...]}``) of ``{"file": name relative to the folder,
    "class_name": ..., "class_index": ..., "boxes": [[x0, y0, x1, y1], ...]}``, boxes in the
    image's pixels (half-open); ``"class"`` may stand for either class key.
    """
    path = Path(folder) / "examples.json"
    return ExampleSet.read(path).examples(class_names) if path.is_file() else []


def _example(entry: Any, number: int, source: Path, class_names: Sequence[str]) -> Example:
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise DatasetError(f"example {number} has no 'file'", str(source))
    file = source.parent / entry["file"]
    if not file.is_file():
        raise DatasetError(f"example {number}: no image file at {file}", str(source))
    boxes = entry.get("boxes", [])
    try:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    except (TypeError, ValueError) as error:  # TypeError: an object or a list of objects instead of numbers
        raise DatasetError(
            f"example {number}: boxes must be [[x0, y0, x1, y1], ...], got {boxes!r}", str(source)
        ) from error
    if not np.isfinite(boxes).all():  # null becomes NaN, which no box can be drawn from
        raise DatasetError(f"example {number}: box coordinates must be numbers, got {entry['boxes']!r}", str(source))
    index = _class_index(entry, class_names)
    return Example(file, GroundTruth(boxes, index), class_names[index] if index is not None else "")


def _class_index(entry: dict, class_names: Sequence[str]) -> int | None:
    """The example's class for this model: by name first (``class_name``, or ``class`` as text), else
    by index (``class_index``, or ``class`` as a number); None where this model has no such class,
    so that another model (say an ImageNet one) still shows the examples' boxes."""
    label = entry.get("class")
    name = entry.get("class_name", label if isinstance(label, str) else None)
    if isinstance(name, str):
        return list(class_names).index(name) if name in class_names else None
    index = entry.get("class_index", label)
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(class_names):
        return index
    return None
