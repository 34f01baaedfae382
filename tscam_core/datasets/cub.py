"""CUB-200-2011 in its official layout, which the generated benchmark also writes.

    images/<relpath>            images.txt            "id relpath"
    image_class_labels.txt      "id class_id" (1-based, ids from classes.txt)
    train_test_split.txt        "id is_train" (2: val) bounding_boxes.txt  "id x y w h"
    classes.txt                 "id name"             masks/<relpath>.png  optional object masks

Several ``bounding_boxes.txt`` lines for one image give several boxes. For masks (PxAP), the
official segmentations archive of CUB-200-2011 can be extracted as it comes, ``segmentations/
<relpath>.png`` (each pixel the fraction of annotators who marked it); ``masks/`` comes first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..errors import DatasetError
from .common import (
    OnError,
    Problems,
    Sample,
    WSOLDataset,
    box_problem,
    clip_boxes,
    header_size,
    read_lines,
    relative_path_problem,
)

#: train_test_split.txt's value of each split: CUB's 1 (train) and 0 (test), and 2 for a validation
#: split held out of both, which the generated benchmark writes (CUB itself has none).
SPLIT_FLAGS = {"train": "1", "test": "0", "val": "2"}
SPLITS = (*SPLIT_FLAGS, "all")
LISTS = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")

T = TypeVar("T")
Rows = dict[str, list[tuple[int, T]]]


def is_cub(root: Path) -> bool:
    return (root / "images.txt").is_file()


def read_cub(root: Path, split: str = "test", on_error: OnError = "raise") -> WSOLDataset:
    if split not in SPLITS:
        raise ValueError(f"CUB split must be one of {', '.join(SPLITS)}; got {split!r}")
    root = Path(root).resolve()
    problems = Problems(on_error)
    class_rows = _table(root / "classes.txt", _name, problems, unique=True)
    class_index = {cid: i for i, cid in enumerate(sorted(class_rows, key=_id_order))}
    class_names = [class_rows[cid][0][1] for cid in sorted(class_rows, key=_id_order)]
    images = _table(root / "images.txt", _name, problems, unique=True)
    labels = _table(root / "image_class_labels.txt", _class_id, problems, unique=True)
    is_train = _table(root / "train_test_split.txt", _flag, problems, unique=True)
    boxes = _table(root / "bounding_boxes.txt", _xywh, problems, unique=False)
    for name, rows in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train), ("bounding_boxes.txt", boxes)):
        for image_id in rows.keys() - images.keys():
            problems(f"image id {image_id} is not listed in images.txt", root / name, rows[image_id][0][0])

    samples = []
    for image_id, [(line, relative)] in images.items():
        where = (root / "images.txt", line)
        missing = [name for name, rows in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train),
                                           ("bounding_boxes.txt", boxes)) if image_id not in rows]
        if missing:
            problems(f"image id {image_id} has no line in {' or '.join(missing)}", *where)
            continue
        label_line, class_id = labels[image_id][0]
        if class_id not in class_index:
            problems(f"unknown class id {class_id} (classes.txt lists {len(class_index)} classes)",
                     root / "image_class_labels.txt", label_line)
            continue
        if split != "all" and is_train[image_id][0][1] != SPLIT_FLAGS[split]:
            continue
        sample = _sample(root, image_id, relative, class_index[class_id], boxes[image_id], where, problems)
        if sample is not None:
            samples.append(sample)
    return WSOLDataset(root, split, class_names, samples, problems.skipped, on_error)


def _sample(root: Path, image_id: str, relative: str, label: int, box_rows: list[tuple[int, np.ndarray]],
            where: tuple[Path, int], problems: Problems) -> Sample | None:
    unsafe = relative_path_problem(relative)
    if unsafe:
        problems(unsafe, *where)
        return None
    path = root / "images" / relative
    if not path.is_file():
        problems(f"image file not found: {path}", *where)
        return None
    try:
        size = header_size(path)
    except DatasetError as error:
        problems(str(error), *where)
        return None
    for box_line, box in box_rows:
        problem = box_problem(box, size)
        if problem:
            problems(f"image id {image_id}: {problem}", root / "bounding_boxes.txt", box_line)
            return None
    return Sample(image_id, path, label, clip_boxes(np.stack([box for _, box in box_rows]), size),
                  _mask_path(root, relative))


#: Where an image's mask is looked for, in order: this project's layout, then CUB's own archive.
MASK_FOLDERS = ("masks", "segmentations")


def _mask_path(root: Path, relative: str) -> Path | None:
    candidates = ((root / folder / relative).with_suffix(".png") for folder in MASK_FOLDERS)
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def _table(path: Path, parse: Callable[[str], T], problems: Problems, unique: bool) -> Rows[T]:
    """Rows keyed by the first field; a line that does not parse is a problem at that line."""
    rows: Rows[T] = {}
    for number, text in read_lines(path):
        key, _, rest = text.partition(" ")
        key, rest = _key(key), rest.strip()
        try:
            value = parse(rest)
        except ValueError as error:
            problems(f"malformed line {text!r}: {error}", path, number)
            continue
        if unique and key in rows:
            problems(f"id {key} is listed twice (first at line {rows[key][0][0]})", path, number)
            continue
        rows.setdefault(key, []).append((number, value))
    return rows


def _id_order(key: str) -> tuple[int, int, str]:
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def _name(rest: str) -> str:
    if not rest:
        raise ValueError("expected 'id value'")
    return rest


def _class_id(rest: str) -> str:
    fields = rest.split()
    if len(fields) != 1:
        raise ValueError(f"expected 'id class_id', got {len(fields) + 1} fields")
    return _key(fields[0])


def _key(text: str) -> str:
    """Ids compare as numbers where they are numbers: '007' and '7' are the same image."""
    return str(int(text)) if text.isdigit() else text


def _flag(rest: str) -> str:
    if rest not in SPLIT_FLAGS.values():
        raise ValueError("is_train must be 0, 1 or 2 (validation)")
    return rest


def _xywh(rest: str) -> np.ndarray:
    fields = rest.split()
    if len(fields) != 4:
        raise ValueError(f"expected 'id x y width height', got {len(fields) + 1} fields")
    x, y, w, h = (float(v) for v in fields)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ValueError("box values must be finite with positive width and height")
    return np.array([x, y, x + w, y + h], np.float32)
