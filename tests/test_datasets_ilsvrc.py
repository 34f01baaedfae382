"""The ILSVRC reader: train class folders, validation boxes from the CSV list or per-image XML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tscam_core import DatasetError
from tscam_core.datasets import open_dataset

SYNSETS = "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\nn01484850 great white shark\n"
VAL = {"ILSVRC2012_val_00000001": (50, 40), "ILSVRC2012_val_00000002": (30, 60), "ILSVRC2012_val_00000003": (40, 40)}
CSV = ("ImageId,PredictionString\n"
       "ILSVRC2012_val_00000001,n01443537 1 2 30 20 n01443537 10 10 50 40 \n"
       "ILSVRC2012_val_00000002,n01440764 0 0 30 60\n"
       "ILSVRC2012_val_00000003,n01484850 5 5 20 20\n")


def write_ilsvrc(root: Path, kaggle: bool = False) -> Path:
    data = root / "ILSVRC/Data/CLS-LOC" if kaggle else root
    (root / "LOC_synset_mapping.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text(SYNSETS)
    for wnid, count in (("n01440764", 2), ("n01484850", 3)):  # goldfish has no folder: a subset
        (data / "train" / wnid).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (20 + i, 16)).save(data / "train" / wnid / f"{wnid}_{i}.JPEG", "JPEG")
    (data / "train" / "n01440764" / "notes.txt").write_text("not an image")
    (data / "val").mkdir(parents=True)
    for image_id, size in VAL.items():
        Image.new("RGB", size).save(data / "val" / f"{image_id}.JPEG", "JPEG")
    return root


def voc(filename: str, size: tuple[int, int] | None, objects: list[tuple[str, list[int]]]) -> str:
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>\n" if size else ""
    objects_xml = "".join(
        f"  <object>\n    <name>{wnid}</name>\n    <bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox>\n  </object>\n" for wnid, b in objects)
    return f"<annotation>\n  <filename>{filename}</filename>\n  {size_xml}{objects_xml}</annotation>\n"


def write_xml(root: Path) -> Path:
    folder = root / "ILSVRC/Annotations/CLS-LOC/val"
    folder.mkdir(parents=True)
    (folder / "ILSVRC2012_val_00000001.xml").write_text(
        voc("ILSVRC2012_val_00000001", (50, 40), [("n01443537", [1, 2, 30, 20]), ("n01443537", [10, 10, 50, 40])]))
    (folder / "ILSVRC2012_val_00000002.xml").write_text(voc("ILSVRC2012_val_00000002", None, [("n01440764", [0, 0, 30, 60])]))
    return folder


def test_train_class_folders_in_synset_order(tmp_path):
    dataset = open_dataset(write_ilsvrc(tmp_path), "train")
    assert dataset.class_names == ["tench", "goldfish", "great white shark"]
    assert [s.label for s in dataset] == [0, 0, 2, 2, 2]
    assert dataset[2].image_id == "n01484850_0" and dataset[2].boxes.shape == (0, 4)
    image, _ = dataset.load(4)
    assert image.size == (22, 16)


def test_unknown_train_folder_is_named_or_skipped(tmp_path):
    root = write_ilsvrc(tmp_path)
    (root / "train/n99999999").mkdir()
    with pytest.raises(DatasetError, match=r"train/n99999999: class folder n99999999 is not in LOC_synset_mapping"):
        open_dataset(root, "train")
    dataset = open_dataset(root, "train", on_error="skip")
    assert len(dataset) == 5 and len(dataset.skipped) == 1


def test_val_from_solution_csv_keeps_every_box(tmp_path):
    root = write_ilsvrc(tmp_path, kaggle=True)
    (root / "LOC_val_solution.csv").write_text(CSV)
    dataset = open_dataset(root, "val")
    assert [s.image_id for s in dataset] == list(VAL)
    assert [s.label for s in dataset] == [1, 0, 2]
    np.testing.assert_array_equal(dataset[0].boxes, [[1, 2, 30, 20], [10, 10, 50, 40]])
    assert len(open_dataset(root, "test", kind="ilsvrc")) == 3


def test_val_from_xml(tmp_path):
    root = write_ilsvrc(tmp_path)
    write_xml(root)
    dataset = open_dataset(root, "test")
    assert [s.image_id for s in dataset] == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"]
    np.testing.assert_array_equal(dataset[0].boxes, [[1, 2, 30, 20], [10, 10, 50, 40]])
    assert dataset[1].label == 0


CSV_BAD = {
    "malformed": (3, "ILSVRC2012_val_00000002,n01440764 0 0 30", "malformed line"),
    "not a number": (3, "ILSVRC2012_val_00000002,n01440764 0 0 x 60", "malformed line"),
    "inverted box": (3, "ILSVRC2012_val_00000002,n01440764 20 0 10 60", "needs x0 < x1"),
    "unknown class": (3, "ILSVRC2012_val_00000002,n00000000 0 0 30 60", "unknown class wnid n00000000"),
    "missing image": (3, "ILSVRC2012_val_00000009,n01440764 0 0 30 60", "image file not found"),
    "box outside": (3, "ILSVRC2012_val_00000002,n01440764 0 0 32 60", "outside the 30x60 image"),
    "listed twice": (4, "ILSVRC2012_val_00000002,n01440764 0 0 30 60", "listed twice (first at line 3)"),
}


@pytest.mark.parametrize("case", CSV_BAD.values(), ids=CSV_BAD.keys())
def test_bad_csv_line_is_named(tmp_path, case):
    number, text, fragment = case
    root = write_ilsvrc(tmp_path)
    lines = CSV.splitlines()
    lines[number - 1] = text
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as caught:
        open_dataset(root, "val")
    assert fragment in str(caught.value) and f"LOC_val_solution.csv:{number}:" in str(caught.value)
    skipped = open_dataset(root, "val", on_error="skip")
    assert len(skipped) == 2 and [line for _, line, _ in skipped.skipped] == [number]


XML_BAD = {
    "unclosed tag": ("<annotation>\n<object>\n<name>n01440764</name>\n</annotation>\n", 4, "XML is malformed"),
    "no bndbox": ("<annotation>\n  <object>\n    <name>n01440764</name>\n  </object>\n</annotation>\n", 2,
                  "has no <bndbox> xmin/ymin/xmax/ymax"),
    "bad number": (voc("x", None, [("n01440764", [0, 0, "1e", 5])]), 3, "is not four numbers"),
    "no name": (voc("x", None, [("", [0, 0, 5, 5])]), 3, "has no <name>"),
    "no object": ("<annotation>\n<filename>x</filename>\n</annotation>\n", 1, "no <object>"),
    "doctype": ('<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY e "x">]>\n<annotation/>\n', 2, "DOCTYPE is refused"),
    "outside the size": (voc("x", (30, 60), [("n01440764", [0, 0, 10, 10]), ("n01440764", [0, 0, 30, 62])]), 8,
                         "outside the 30x60 image"),
}


@pytest.mark.parametrize("case", XML_BAD.values(), ids=XML_BAD.keys())
def test_bad_xml_is_named_with_its_line(tmp_path, case):
    text, line, fragment = case
    root = write_ilsvrc(tmp_path)
    folder = write_xml(root)
    (folder / "ILSVRC2012_val_00000002.xml").write_text(text)
    with pytest.raises(DatasetError) as caught:
        open_dataset(root, "val")
    assert fragment in str(caught.value)
    assert caught.value.path.endswith("ILSVRC2012_val_00000002.xml") and caught.value.line == line
    skipped = open_dataset(root, "val", on_error="skip")
    assert [s.image_id for s in skipped] == ["ILSVRC2012_val_00000001"] and len(skipped.skipped) == 1


def test_unknown_wnid_in_xml(tmp_path):
    root = write_ilsvrc(tmp_path)
    folder = write_xml(root)
    (folder / "ILSVRC2012_val_00000002.xml").write_text(voc("x", None, [("n12345678", [0, 0, 5, 5])]))
    with pytest.raises(DatasetError, match=r"val_00000002\.xml:1: unknown class wnid n12345678"):
        open_dataset(root, "val")


def test_layout_problems_are_named(tmp_path):
    root = write_ilsvrc(tmp_path)
    with pytest.raises(DatasetError, match="no LOC_val_solution.csv and no per-image XML"):
        open_dataset(root, "val")
    (root / "LOC_synset_mapping.txt").write_text(SYNSETS + "n01443537 goldfish again\nn0000\n")
    with pytest.raises(DatasetError, match=r"LOC_synset_mapping\.txt:4: wnid n01443537 is listed twice"):
        open_dataset(root, "train")
    assert len(open_dataset(root, "train", on_error="skip").skipped) == 2
    with pytest.raises(ValueError, match="split"):
        open_dataset(root, "holdout")
