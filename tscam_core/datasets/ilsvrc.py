"""ILSVRC 2012 localization: training class folders, validation boxes from XML or the CSV list.

Accepted layouts (the plain one and Kaggle's), under the root:

    LOC_synset_mapping.txt                  "wnid name, synonym, ..."  (the class order)
    train/<wnid>/*.JPEG                     or ILSVRC/Data/CLS-LOC/train/<wnid>/
    val/*.JPEG                              or ILSVRC/Data/CLS-LOC/val/
    LOC_val_solution.csv                    "ImageId,PredictionString" = "wnid x0 y0 x1 y1 ..."
      or per-image PASCAL VOC XML in ILSVRC/Annotations/CLS-LOC/val/, annotations/val/ or val/

Every object of an image is kept as a box; the label is the first object's class. Boxes are
taken as the annotation gives them, as the official TS-CAM evaluation does.
"""

from __future__ import annotations

import os
from pathlib import Path
from xml.parsers import expat

import numpy as np

from ..errors import DatasetError
from .common import OnError, Problems, Sample, WSOLDataset, box_problem, clip_boxes, header_size, read_lines

SYNSETS = "LOC_synset_mapping.txt"
SOLUTION = "LOC_val_solution.csv"
IMAGE_SUFFIXES = (".JPEG", ".jpeg", ".jpg", ".JPG", ".png", ".PNG")
KAGGLE = Path("ILSVRC/Data/CLS-LOC")


def is_ilsvrc(root: Path) -> bool:
    return (root / SYNSETS).is_file()


def read_ilsvrc(root: Path, split: str = "val", on_error: OnError = "raise") -> WSOLDataset:
    """``split`` is "train" or "val" ("test" means "val", the split WSOL papers test on)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"ILSVRC split must be train, val or test; got {split!r}")
    root = Path(root).resolve()
    problems = Problems(on_error)
    wnids, names = _synsets(root / SYNSETS, problems)
    if split == "train":
        samples = _train(_folder(root, "train"), wnids, problems)
    else:
        samples = _val(root, _folder(root, "val"), wnids, problems)
    return WSOLDataset(root, split, names, samples, problems.skipped, on_error)


def _folder(root: Path, name: str) -> Path:
    for candidate in (root / name, root / KAGGLE / name):
        if candidate.is_dir():
            return candidate
    raise DatasetError(f"no {name}/ or {KAGGLE / name}/ image folder", str(root))


def _synsets(path: Path, problems: Problems) -> tuple[dict[str, int], list[str]]:
    wnids: dict[str, int] = {}
    names: list[str] = []
    for number, text in read_lines(path):
        wnid, _, rest = text.partition(" ")
        name = rest.split(",")[0].strip()
        if not name:
            problems(f"malformed line {text!r}: expected 'wnid name, ...'", path, number)
        elif wnid in wnids:
            problems(f"wnid {wnid} is listed twice", path, number)
        else:
            wnids[wnid] = len(names)
            names.append(name)
    return wnids, names


def _train(folder: Path, wnids: dict[str, int], problems: Problems) -> list[Sample]:
    """Class folders in synset order; a missing folder is a subset, an unknown one a problem."""
    for extra in sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in wnids):
        problems(f"class folder {extra} is not in {SYNSETS}", folder / extra)
    samples = []
    empty = np.zeros((0, 4), np.float32)
    for wnid, label in wnids.items():
        class_folder = folder / wnid
        if class_folder.is_dir():
            with os.scandir(class_folder) as entries:  # scandir: no extra stat per file on 1.28M images
                files = sorted(e.name for e in entries if e.name.endswith(IMAGE_SUFFIXES) and e.is_file())
            samples += [Sample(Path(name).stem, class_folder / name, label, empty) for name in files]
    return samples


def _val(root: Path, images: Path, wnids: dict[str, int], problems: Problems) -> list[Sample]:
    if (root / SOLUTION).is_file():
        annotations = _solution(root / SOLUTION, problems)
    else:
        annotations = _xml_folder(root, images, problems)
    samples = []
    for image_id, (path, line, objects, size) in annotations.items():
        unknown = next((wnid for _, wnid, _ in objects if wnid not in wnids), None)
        if unknown is not None:
            problems(f"unknown class wnid {unknown} (not in {SYNSETS})", path, line)
            continue
        image_path = next((images / (image_id + s) for s in IMAGE_SUFFIXES if (images / (image_id + s)).is_file()), None)
        if image_path is None:
            problems(f"image file not found: {images / image_id}.JPEG", path, line)
            continue
        try:
            size = size or header_size(image_path)
        except DatasetError as error:
            problems(str(error), path, line)
            continue
        boxes = np.stack([box for _, _, box in objects])
        bad = next(((obj_line, p) for obj_line, _, box in objects if (p := box_problem(box, size))), None)
        if bad is not None:
            problems(f"{image_id}: {bad[1]}", path, bad[0])
            continue
        samples.append(Sample(image_id, image_path, wnids[objects[0][1]], clip_boxes(boxes, size)))
    return samples


#: image id -> (annotation file, its line, [(line, wnid, box)], (width, height) or None)
Annotations = dict[str, tuple[Path, int, list[tuple[int, str, np.ndarray]], tuple[int, int] | None]]


def _solution(path: Path, problems: Problems) -> Annotations:
    annotations: Annotations = {}
    for number, text in read_lines(path):
        if number == 1 and text.replace(" ", "").lower().startswith("imageid,"):
            continue
        image_id, _, prediction = text.partition(",")
        tokens = prediction.split()
        try:
            if not image_id or not tokens or len(tokens) % 5:
                raise ValueError("expected 'ImageId,wnid x0 y0 x1 y1 [wnid x0 y0 x1 y1 ...]'")
            objects = [(number, tokens[i], _box(tokens[i + 1:i + 5])) for i in range(0, len(tokens), 5)]
        except ValueError as error:
            problems(f"malformed line {text!r}: {error}", path, number)
            continue
        if image_id in annotations:
            problems(f"image {image_id} is listed twice (first at line {annotations[image_id][1]})", path, number)
            continue
        annotations[image_id] = (path, number, objects, None)
    return annotations


def _box(values: list[str]) -> np.ndarray:
    try:
        box = np.array([float(v) for v in values], np.float32)
    except ValueError:
        raise ValueError(f"box {values} is not four numbers") from None
    if not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"box {values} needs x0 < x1 and y0 < y1")
    return box


def _xml_folder(root: Path, images: Path, problems: Problems) -> Annotations:
    candidates = (root / "ILSVRC/Annotations/CLS-LOC/val", root / "annotations/val", images)
    folder = next((c for c in candidates if c.is_dir() and any(c.glob("*.xml"))), None)
    if folder is None:
        raise DatasetError(f"no {SOLUTION} and no per-image XML annotations for the validation images", str(root))
    annotations: Annotations = {}
    for path in sorted(folder.glob("*.xml")):
        try:
            objects, size = read_voc_xml(path)
        except DatasetError as error:
            problems.add(error)
            continue
        annotations[path.stem] = (path, 1, objects, size)
    return annotations


def read_voc_xml(path: Path) -> tuple[list[tuple[int, str, np.ndarray]], tuple[int, int] | None]:
    """Objects ((line, wnid, box)) and the (width, height) of one PASCAL VOC annotation; no DTDs."""
    parser = expat.ParserCreate()
    stack: list[str] = []
    texts: dict[str, tuple[int, str]] = {}
    objects: list[tuple[int, dict[str, tuple[int, str]]]] = []

    def start(name: str, _attrs: dict) -> None:
        stack.append(name)
        if stack[-2:] == ["annotation", "object"]:
            objects.append((parser.CurrentLineNumber, {}))
        leaf_of(name)[name] = (parser.CurrentLineNumber, "")

    def leaf_of(_name: str) -> dict[str, tuple[int, str]]:
        return objects[-1][1] if "object" in stack[:-1] and objects else texts

    def data(chunk: str) -> None:
        if stack:
            target = leaf_of(stack[-1])
            line, text = target.get(stack[-1], (parser.CurrentLineNumber, ""))
            target[stack[-1]] = (line, text + chunk)

    def refuse_doctype(*_args) -> None:
        raise DatasetError("XML with a DOCTYPE is refused (entity expansion)", str(path), parser.CurrentLineNumber)

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda _name: stack.pop()
    parser.CharacterDataHandler = data
    parser.StartDoctypeDeclHandler = refuse_doctype
    try:
        parser.Parse(path.read_bytes(), True)
    except expat.ExpatError as error:
        raise DatasetError(f"XML is malformed: {expat.ErrorString(error.code)}", str(path), error.lineno) from error
    except OSError as error:
        raise DatasetError(f"cannot read: {error}", str(path)) from error
    if not objects:
        raise DatasetError("no <object> in this annotation", str(path), 1)
    result = []
    for line, fields in objects:
        try:
            wnid = fields.get("name", (line, ""))[1].strip()
            if not wnid:
                raise ValueError("has no <name>")
            missing = [k for k in ("xmin", "ymin", "xmax", "ymax") if not fields.get(k, (line, ""))[1].strip()]
            if missing:
                raise ValueError(f"has no <bndbox> {'/'.join(missing)}")
            result.append((line, wnid, _box([fields[k][1].strip() for k in ("xmin", "ymin", "xmax", "ymax")])))
        except ValueError as error:
            raise DatasetError(f"<object> {error}", str(path), line) from error
    return result, _size(texts)


def _size(texts: dict[str, tuple[int, str]]) -> tuple[int, int] | None:
    try:
        width, height = int(texts["width"][1]), int(texts["height"][1])
    except (KeyError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None
