"""The CUB-layout reader on small datasets written here, and TorchWSOL's geometry on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tscam_core import DatasetError, Preprocess
from tscam_core.datasets import TorchWSOL, TrainTransform, collate, open_dataset
from tscam_core.transforms import IMAGENET_MEAN, IMAGENET_STD

#: (relpath, class id, is_train, (width, height), [x, y, w, h] boxes)
ROWS = [
    ("001.Cat/a.png", 1, 1, (40, 30), [[2, 3, 10, 12]]),
    ("001.Cat/b.png", 1, 0, (50, 40), [[5, 5, 20, 10]]),
    ("002.Dog/c.png", 2, 1, (30, 30), [[0, 0, 30, 30]]),
    ("002.Dog/d.png", 2, 0, (60, 40), [[10, 4, 15, 30], [40, 2, 12, 12]]),
]


def write_cub(root: Path, rows=ROWS, masks: bool = False) -> Path:
    """A CUB layout where each image is black with white boxes, so pixels can be checked against boxes."""
    lines: dict[str, list[str]] = {"images": [], "labels": [], "split": [], "boxes": []}
    for image_id, (relative, class_id, train, (w, h), boxes) in enumerate(rows, 1):
        pixels = np.zeros((h, w, 3), np.uint8)
        for x, y, bw, bh in boxes:
            pixels[y:y + bh, x:x + bw] = 255
            lines["boxes"].append(f"{image_id} {x} {y} {bw} {bh}")
        for folder in ("images",) + (("masks",) if masks else ()):
            (root / folder / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels if folder == "images" else pixels[:, :, 0]).save((root / folder / relative).with_suffix(".png"))
        lines["images"].append(f"{image_id} {relative}")
        lines["labels"].append(f"{image_id} {class_id}")
        lines["split"].append(f"{image_id} {train}")
    for name, key in (("images.txt", "images"), ("image_class_labels.txt", "labels"),
                      ("train_test_split.txt", "split"), ("bounding_boxes.txt", "boxes")):
        (root / name).write_text("\n".join(lines[key]) + "\n")
    (root / "classes.txt").write_text("1 001.Cat\n2 002.Dog\n")
    return root


def edit_line(path: Path, number: int, text: str | None) -> None:
    """Replace (or with None delete) line ``number`` (1-based), or append when it is past the end."""
    lines = path.read_text().splitlines()
    if number > len(lines):
        lines.append(text)
    elif text is None:
        del lines[number - 1]
    else:
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def test_reads_splits_labels_and_boxes(tmp_path):
    root = write_cub(tmp_path)
    test = open_dataset(root, "test")
    assert test.class_names == ["001.Cat", "002.Dog"]
    assert [s.image_id for s in test] == ["2", "4"]
    assert [s.label for s in test] == [0, 1]
    np.testing.assert_array_equal(test[0].boxes, [[5, 5, 25, 15]])
    np.testing.assert_array_equal(test[1].boxes, [[10, 4, 25, 34], [40, 2, 52, 14]])
    assert test[0].boxes.dtype == np.float32 and test[0].path.is_absolute()
    assert [s.image_id for s in open_dataset(root, "train")] == ["1", "3"]
    assert len(open_dataset(root, "all", kind="cub")) == 4
    image, sample = test.load(1)
    assert image.mode == "RGB" and image.size == (60, 40) and sample is test[1]
    assert test.mask(1) is None and test.skipped == []


def test_masks_are_found_and_loaded_as_bool(tmp_path):
    dataset = open_dataset(write_cub(tmp_path, masks=True), "test")
    mask = dataset.mask(0)
    assert dataset[0].mask_path == tmp_path.resolve() / "masks/001.Cat/b.png"
    assert mask.dtype == bool and mask.shape == (40, 50)
    ys, xs = np.nonzero(mask)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (5, 5, 25, 15)


def test_cub_segmentations_folder_gives_soft_masks_read_by_majority(tmp_path):
    """CUB-200-2011's own archive: segmentations/<relpath>.png, each pixel the share of annotators."""
    root = write_cub(tmp_path)
    soft = np.zeros((40, 50), np.uint8)
    soft[5:15, 5:25] = 153  # 3 of 5 annotators: object
    soft[20:30, 5:25] = 102  # 2 of 5: not object
    (root / "segmentations/001.Cat").mkdir(parents=True)
    Image.fromarray(soft).save(root / "segmentations/001.Cat/b.png")
    dataset = open_dataset(root, "test")
    assert dataset[0].mask_path == root.resolve() / "segmentations/001.Cat/b.png" and dataset[1].mask_path is None
    ys, xs = np.nonzero(dataset.mask(0))
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (5, 5, 25, 15)
    # masks/ comes first where both exist.
    write_cub(root, masks=True)
    assert open_dataset(root, "test")[0].mask_path == root.resolve() / "masks/001.Cat/b.png"


def test_box_within_one_pixel_of_the_border_is_clipped(tmp_path):
    root = write_cub(tmp_path)
    edit_line(root / "bounding_boxes.txt", 2, "2 -0.5 5 51 10")  # image 2 is 50 wide
    np.testing.assert_allclose(open_dataset(root, "test")[0].boxes, [[0, 5, 50, 15]])


# (file to edit, line, new text, message fragment, file named, line named)
BAD = {
    "malformed images line": ("images.txt", 2, "2", "malformed line", "images.txt", 2),
    "malformed box": ("bounding_boxes.txt", 2, "2 5 5 x 10", "malformed line", "bounding_boxes.txt", 2),
    "box with no width": ("bounding_boxes.txt", 2, "2 5 5 0 10", "positive width", "bounding_boxes.txt", 2),
    "box outside image": ("bounding_boxes.txt", 2, "2 40 5 20 10", "outside the 50x40 image", "bounding_boxes.txt", 2),
    "unknown class": ("image_class_labels.txt", 2, "2 7", "unknown class id 7", "image_class_labels.txt", 2),
    "bad split flag": ("train_test_split.txt", 2, "2 yes", "is_train must be 0, 1 or 2", "train_test_split.txt", 2),
    "id only in labels": ("image_class_labels.txt", 5, "9 1", "image id 9 is not listed in images.txt", "image_class_labels.txt", 5),
    "id missing from split": ("train_test_split.txt", 2, None, "no line in train_test_split.txt", "images.txt", 2),
    "id missing from boxes": ("bounding_boxes.txt", 2, None, "no line in bounding_boxes.txt", "images.txt", 2),
    "duplicate id": ("images.txt", 3, "2 002.Dog/c.png", "id 2 is listed twice (first at line 2)", "images.txt", 3),
    "missing image": ("images.txt", 2, "2 001.Cat/nothing.png", "image file not found", "images.txt", 2),
    "path leaves the dataset": ("images.txt", 2, "2 ../outside.png", "must be relative", "images.txt", 2),
    "class listed twice": ("classes.txt", 2, "1 001.Again", "id 1 is listed twice", "classes.txt", 2),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_annotation_names_file_and_line(tmp_path, case):
    edited, number, text, fragment, named, line = case
    root = write_cub(tmp_path)
    edit_line(root / edited, number, text)
    with pytest.raises(DatasetError) as caught:
        open_dataset(root, "test")
    assert fragment in str(caught.value)
    assert Path(caught.value.path).name == named and caught.value.line == line
    assert f"{named}:{line}:" in str(caught.value)


def test_image_that_is_not_an_image(tmp_path):
    root = write_cub(tmp_path)
    (root / "images/001.Cat/b.png").write_text("not a picture")
    with pytest.raises(DatasetError, match=r"images\.txt:2: .*b\.png: image cannot be read"):
        open_dataset(root, "test")


def test_missing_list_file_is_named(tmp_path):
    root = write_cub(tmp_path)
    (root / "classes.txt").unlink()
    with pytest.raises(DatasetError, match=r"classes\.txt: annotation file not found"):
        open_dataset(root)


def test_skip_mode_counts_and_keeps_reasons(tmp_path, caplog):
    root = write_cub(tmp_path)
    edit_line(root / "bounding_boxes.txt", 2, "2 40 5 20 10")
    edit_line(root / "image_class_labels.txt", 4, "4 9")
    edit_line(root / "images.txt", 5, "garbage")
    dataset = open_dataset(root, "all", on_error="skip")
    assert [s.image_id for s in dataset] == ["1", "3"]
    assert [(Path(f).name, line) for f, line, _ in dataset.skipped] == [
        ("images.txt", 5), ("bounding_boxes.txt", 2), ("image_class_labels.txt", 4)]
    assert "outside" in dataset.skipped[1][2]
    assert "3 annotations skipped" in caplog.text


def test_on_error_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        open_dataset(write_cub(tmp_path), on_error="ignore")


def test_unknown_layout_and_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="neither a CUB layout"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")


def test_load_rechecks_boxes_against_decoded_image(tmp_path):
    root = write_cub(tmp_path)
    dataset = open_dataset(root, "test")
    Image.new("RGB", (10, 10)).save(root / "images/001.Cat/b.png")  # replaced after opening
    with pytest.raises(DatasetError, match="outside the 10x10 image"):
        dataset.load(0)


# ---------------------------------------------------------------- TorchWSOL


def white_box(tensor: torch.Tensor) -> np.ndarray:
    """Tight box of the pixels brighter than mid-grey in a normalised image tensor."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    grey = (tensor * std + mean).mean(0).numpy()
    ys, xs = np.nonzero(grey > 0.5)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_train_transform_boxes_follow_crop_and_flip(tmp_path):
    rows = [("001.Cat/a.png", 1, 1, (60, 40), [[4, 6, 16, 20]])]  # object in the left part
    dataset = open_dataset(write_cub(tmp_path, rows), "train")
    torch_data = TorchWSOL(dataset, TrainTransform.create((48, 72), (40, 56)), seed=3)
    sides = set()
    for epoch in range(12):
        torch_data.set_epoch(epoch)
        item = torch_data[0]
        assert item["image"].shape == (3, 40, 56)
        np.testing.assert_allclose(item["boxes"][0].numpy(), white_box(item["image"]), atol=1.0)
        sides.add(bool(item["boxes"][0, 0] > 28))
    assert sides == {False, True}, "over 12 epochs both flipped and unflipped crops occur"


def test_train_augmentation_depends_on_seed_epoch_index_only(tmp_path):
    dataset = open_dataset(write_cub(tmp_path), "all")
    transform = TrainTransform.create(48, 40)
    first, second = TorchWSOL(dataset, transform, seed=1), TorchWSOL(dataset, transform, seed=1)
    assert torch.equal(first[3]["image"], second[3]["image"])
    crops = set()
    for epoch in range(6):
        first.set_epoch(epoch)
        crops.add(tuple(first[3]["boxes"][0].tolist()))
    assert len(crops) > 1


def test_test_transform_scales_boxes_into_model_frame(tmp_path):
    dataset = open_dataset(write_cub(tmp_path), "test")
    item = TorchWSOL(dataset, Preprocess((32, 32), (32, 32)))[1]  # 60 x 40 image
    assert item["image"].shape == (3, 32, 32) and item["label"] == 1 and item["index"] == 1
    expected = np.array([[10, 4, 25, 34], [40, 2, 52, 14]], np.float32) * np.array([32 / 60, 32 / 40] * 2, np.float32)
    np.testing.assert_allclose(item["boxes"].numpy(), expected, rtol=1e-6)
    assert item["size"].tolist() == [60, 40]
    cropped = TorchWSOL(dataset, Preprocess((32, 32), (40, 40)))[0]  # 50 x 40 image, center crop 4 px
    expected = np.array([[5 * 40 / 50 - 4, 5 - 4, 25 * 40 / 50 - 4, 15 - 4]], np.float32)
    np.testing.assert_allclose(cropped["boxes"].numpy(), expected, rtol=1e-6)


def test_collate_keeps_variable_box_counts(tmp_path):
    dataset = TorchWSOL(open_dataset(write_cub(tmp_path), "all"), Preprocess((16, 16), (16, 16)))
    batch = collate([dataset[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 16, 16)
    assert batch["label"].tolist() == [0, 0, 1, 1] and batch["index"].tolist() == [0, 1, 2, 3]
    assert [len(b) for b in batch["boxes"]] == [1, 1, 1, 2]
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collate)
    assert [len(b["label"]) for b in loader] == [3, 1]


def test_oversized_image_is_refused_from_its_header(tmp_path):
    root = write_cub(tmp_path)
    Image.new("1", (8000, 6000)).save(root / "images/001.Cat/b.png")  # 48 Mpx: over the limit, tiny file
    with pytest.raises(DatasetError, match=r"images\.txt:2: .*8000x6000, over the limit"):
        open_dataset(root, "test")
