"""The Cluttered Fashion-MNIST generator on the committed fixture of real Fashion-MNIST items."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from tscam_core import DatasetError
from tscam_core.datasets import open_dataset
from tscam_core.datasets.fashion import (
    CLASS_NAMES,
    BenchmarkConfig,
    differences,
    generate,
    load_fashion_mnist,
    main,
    read_idx,
    render,
    tight_box,
)

FIXTURE = Path(__file__).parent / "fixtures" / "fashion_mnist_small"
SMALL = BenchmarkConfig(train=12, test=6, seed=0, val=4)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "fashion"
    generate(out, SMALL, FIXTURE, progress=False)
    return out


def test_fixture_is_real_balanced_fashion_mnist():
    images, labels = load_fashion_mnist(FIXTURE, "train")
    assert images.shape == (240, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [24] * 10
    test_images, test_labels = load_fashion_mnist(FIXTURE, "test")
    assert test_images.shape == (90, 28, 28) and np.bincount(test_labels).tolist() == [9] * 10
    assert images.max() == 255 and 0.2 < (images > 25).mean() < 0.8  # garments, not noise or blanks


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x09\x01\x00\x00\x00\x02ab"))
    with pytest.raises(DatasetError, match="bad magic"):
        read_idx(tmp_path / "bad.gz")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x03" + np.array([5, 28, 28], ">u4").tobytes() + b"\0" * 100)
    with pytest.raises(DatasetError, match="does not match its header"):
        read_idx(tmp_path / "short")
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DatasetError, match="cannot read idx file"):
        read_idx(tmp_path / "broken.gz")
    with pytest.raises(DatasetError, match="no train-images-idx3-ubyte.gz"):
        load_fashion_mnist(tmp_path, "train")


def test_same_seed_same_bytes_other_seed_other_images(generated, tmp_path):
    again = tmp_path / "again"
    generate(again, SMALL, FIXTURE, progress=False)
    assert files(again) == files(generated)
    other = tmp_path / "other"
    generate(other, BenchmarkConfig(train=12, test=6, seed=1), FIXTURE, progress=False)
    first, second = files(generated), files(other)
    changed = [name for name in first if name.startswith("images/") and first[name] != second.get(name)]
    assert len(changed) >= 15


def test_more_images_keep_the_first_ones(generated, tmp_path):
    fewer = tmp_path / "fewer"
    generate(fewer, BenchmarkConfig(train=5, test=2, seed=0), FIXTURE, progress=False)
    small, full = files(fewer), files(generated)
    images = [name for name in small if name.startswith(("images/", "masks/"))]
    assert len(images) == 14 and all(small[name] == full[name] for name in images)


def test_round_trip_through_the_cub_reader(generated):
    train, test, val = (open_dataset(generated, split) for split in ("train", "test", "val"))
    assert (len(train), len(test), len(val)) == (12, 6, 4)
    assert train.class_names == CLASS_NAMES
    for dataset in (train, test, val):
        for index, sample in enumerate(dataset):
            image, _ = dataset.load(index)
            assert image.size == (64, 64)
            assert sample.path.parent.name.startswith(f"{sample.label + 1:02d}.")
            assert sample.mask_path is not None and sample.path.name.startswith(dataset.split)
    summary = json.loads((generated / "benchmark.json").read_text())
    t10k = load_fashion_mnist(FIXTURE, "test")[0]
    assert summary["source"]["test"]["sha256"] == hashlib.sha256(t10k.tobytes()).hexdigest()[:16]
    assert summary["config"]["seed"] == 0 and summary["splits"]["train"]["images"] == 12


def test_validation_continues_the_test_stream_past_the_test_images(generated, tmp_path):
    # Its items are Fashion-MNIST test items (which no stage trains on) that no test image shows:
    # the four validation images are the ones a test split of ten would show after the first six.
    longer = tmp_path / "longer"
    generate(longer, BenchmarkConfig(train=0, test=10, seed=0), FIXTURE, progress=False)
    val, test = files(generated), files(longer)
    for index in range(4):
        [name] = [n for n in val if n.startswith("images/") and n.endswith(f"/val_{index:05d}.png")]
        assert val[name] == test[name.replace(f"val_{index:05d}", f"test_{index + 6:05d}")]
    flags = (generated / "train_test_split.txt").read_text().split()[1::2]
    assert (flags.count("1"), flags.count("0"), flags.count("2")) == (12, 6, 4)


def test_validation_items_may_not_repeat_test_items(tmp_path):
    # The fixture's test source holds 90 items: 80 test images leave 10 for validation.
    with pytest.raises(DatasetError, match="would repeat test items"):
        generate(tmp_path / "x", BenchmarkConfig(train=0, test=80, seed=0, val=11), FIXTURE, progress=False)


def test_box_is_the_tight_box_of_the_mask(generated):
    for split in ("train", "test"):
        dataset = open_dataset(generated, split)
        for index, sample in enumerate(dataset):
            mask = dataset.mask(index)
            ys, xs = np.nonzero(mask)
            np.testing.assert_array_equal(sample.boxes, [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]])
            width, height = (sample.boxes[0, 2:] - sample.boxes[0, :2])
            assert max(width, height) >= 8 and mask.sum() > 0.2 * width * height


def square_item(side: int = 28, lo: int = 8, hi: int = 20) -> np.ndarray:
    item = np.zeros((side, side), np.uint8)
    item[lo:hi, lo + 2:hi] = 255
    return item


def test_mask_is_exactly_the_items_pixels():
    config = BenchmarkConfig(item_min=28, item_max=28, distractors_min=0, distractors_max=0, noise=0.0)
    rendered = render(square_item(), [], config, np.random.default_rng(5))
    ys, xs = np.nonzero(rendered.mask)
    assert rendered.mask.sum() == 12 * 10 and xs.max() - xs.min() == 9 and ys.max() - ys.min() == 11
    inside = rendered.image[rendered.mask]
    assert (inside == inside[0]).all(), "a flat item of full intensity renders as one colour"
    ring = np.zeros_like(rendered.mask)
    x0, y0, x1, y1 = rendered.box.astype(int)
    ring[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True
    ring &= ~rendered.mask
    assert not (rendered.image[ring] == inside[0]).all(axis=1).any(), "no item colour outside the mask"


def test_item_is_scaled_and_drawn_over_distractors():
    config = BenchmarkConfig(item_min=56, item_max=56, distractors_min=6, distractors_max=6, noise=0.0)
    item = square_item()
    rendered = render(item, [square_item(lo=2, hi=26)] * 6, config, np.random.default_rng(0))
    assert abs(int(rendered.mask.sum()) - 4 * 12 * 10) <= 2 * (24 + 20)  # twice the side: four times the area
    core = cv2.erode(rendered.mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # full-intensity pixels
    assert core.sum() > 250
    assert len(np.unique(rendered.image[core], axis=0)) == 1, "distractors never show through the item"
    plain = render(item, [], config, np.random.default_rng(0))
    assert (rendered.image != plain.image).any(axis=2).sum() > 50, "the distractors are drawn"
    np.testing.assert_array_equal(rendered.box, tight_box(rendered.mask))


def test_contrast_scales_the_background_swing():
    def background_spread(contrast: float) -> float:
        config = BenchmarkConfig(distractors_min=0, distractors_max=0, noise=0.0, contrast=contrast)
        rendered = render(square_item(), [], config, np.random.default_rng(3))
        return float(rendered.image[~rendered.mask].astype(float).std(axis=0).mean())

    assert background_spread(0.0) == 0.0, "no contrast: one flat colour"
    assert 0 < background_spread(0.35) < background_spread(0.7) < background_spread(1.0)


def test_differences_name_the_fields_that_change_the_pixels(generated):
    assert differences(generated, SMALL) == {}
    assert differences(generated, BenchmarkConfig(train=12, test=6, seed=0, val=4, contrast=0.5)) == {
        "contrast": (0.7, 0.5)}
    assert set(differences(generated.parent / "nowhere", SMALL)) == set(BenchmarkConfig.__dataclass_fields__)


def test_a_benchmark_from_before_the_validation_split_has_none(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    config = {key: value for key, value in asdict(BenchmarkConfig(train=12, test=6)).items() if key != "val"}
    (old / "benchmark.json").write_text(json.dumps({"config": config}))
    assert differences(old, BenchmarkConfig(train=12, test=6)) == {}
    assert differences(old, BenchmarkConfig(train=12, test=6, val=4)) == {"val": (0, 4)}


def test_config_is_validated():
    with pytest.raises(ValueError, match="item_max <= canvas"):
        BenchmarkConfig(canvas=32, item_max=40)
    with pytest.raises(ValueError, match="contrast must not be negative"):
        BenchmarkConfig(contrast=-0.1)


def test_cli_writes_summary_and_refuses_to_overwrite(tmp_path, capsys):
    args = ["--out", str(tmp_path / "cli"), "--source", str(FIXTURE), "--train", "3", "--test", "2", "--canvas", "56",
            "--item-max", "48", "--val", "1"]
    assert main(args) == 0
    output = capsys.readouterr().out
    assert "train: 3 images" in output and "test: 2 images" in output and "val: 1 images" in output
    assert len(open_dataset(tmp_path / "cli", "all")) == 6
    assert main(args) == 2
    assert "already here" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--train", "1"]) == 0
    assert len(open_dataset(tmp_path / "cli", "all")) == 4
    assert main(["--out", str(tmp_path / "x"), "--source", str(tmp_path)]) == 2
    assert "no train-images-idx3-ubyte" in capsys.readouterr().err
