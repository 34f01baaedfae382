"""The embedded benchmark, Cluttered Fashion-MNIST: a WSOL task that trains on a CPU.

Each Fashion-MNIST item is drawn, tinted, at a random scale and position on a canvas of smooth
colour noise, over fragments of other items (distractors that look like evidence but are not the
object), then pixel noise is added. The ground-truth box is the tight box of the item's own pixels
(scaled intensity > 0.1), which is also the saved object mask. Output is the CUB layout, so the
CUB reader opens it. Every image depends only on (seed, split, index): the same seed writes
byte-identical files, and asking for more images keeps the first ones unchanged.

The validation split (``--val``, flagged 2 in train_test_split.txt) chooses the CAM threshold and
the checkpoint, so no training stage may see its items: it continues the test split's stream
(Fashion-MNIST test items, which nothing trains on) past the test images, so its items are
neither trained on nor test items.

    python -m tscam_core.datasets.fashion --out data/fashion-cluttered --train 10000 --test 2000 --val 1000
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import DatasetError

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
#: Debian's dataset-fashion-mnist package.
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SOURCE_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SPLIT_CODES = {"train": 1, "test": 2}
#: train_test_split.txt's value for each written split (the CUB reader's flags).
SPLIT_FLAGS = {"train": 1, "test": 0, "val": 2}
#: Scaled intensity above which a pixel belongs to the item (and its mask and box).
ITEM_THRESHOLD = 0.1


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything that decides the generated pixels; saved as benchmark.json next to them."""

    train: int = 10000
    test: int = 2000
    canvas: int = 64
    item_min: int = 28
    item_max: int = 52
    distractors_min: int = 2
    distractors_max: int = 5
    noise: float = 0.03
    contrast: float = 0.7
    seed: int = 0
    val: int = 0

    def __post_init__(self) -> None:
        if not 8 <= self.item_min <= self.item_max <= self.canvas:
            raise ValueError(f"need 8 <= item_min <= item_max <= canvas, got {self.item_min}, {self.item_max}, {self.canvas}")
        if not 0 <= self.distractors_min <= self.distractors_max:
            raise ValueError("need 0 <= distractors_min <= distractors_max")
        if min(self.train, self.test, self.val) < 0 or self.noise < 0 or self.contrast < 0:
            raise ValueError("counts, noise and contrast must not be negative")


# ---------------------------------------------------------------- reading Fashion-MNIST


def read_idx(path: Path) -> np.ndarray:
    """An idx1/idx3 ubyte array from a plain or gzipped file, its header checked against its size."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DatasetError(f"cannot read idx file: {error}", str(path)) from error
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DatasetError("not an idx file of unsigned bytes (bad magic number)", str(path))
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int) if len(raw) >= 4 + 4 * ndim else None
    if dims is None or len(raw) != 4 + 4 * ndim + int(np.prod(dims)):
        raise DatasetError(f"idx file size does not match its header (dims {None if dims is None else dims.tolist()})", str(path))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise DatasetError(f"no {stem}.gz or {stem} here", str(folder))


def load_fashion_mnist(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N x 28 x 28 uint8 images, N labels) of the train or test (t10k) split."""
    image_stem, label_stem = SOURCE_FILES[split]
    image_path, label_path = _find(source, image_stem), _find(source, label_stem)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or len(images) == 0:
        raise DatasetError(f"expected N x H x W images and N labels, got {images.shape} and {labels.shape}", str(image_path))
    if labels.max() >= len(CLASS_NAMES):
        raise DatasetError(f"label {labels.max()} is not a Fashion-MNIST class (0-9)", str(label_path))
    return images, labels


def download(folder: Path) -> Path:
    """Fetch the four gz files from the dataset's public location (only when the user has no copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in (name for pair in SOURCE_FILES.values() for name in pair):
        target = folder / f"{stem}.gz"
        if target.is_file():
            continue
        partial = target.with_suffix(".gz.part")
        try:
            with urllib.request.urlopen(DOWNLOAD_URL + target.name, timeout=60) as response, partial.open("wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as error:
            raise DatasetError(f"download of {DOWNLOAD_URL + target.name} failed ({error}); "
                               f"install Debian's dataset-fashion-mnist or pass --source", str(folder)) from error
        read_idx(partial.rename(target))
    return folder


def find_source(source: str | Path | None = None, download_to: str | Path | None = None) -> Path:
    """The folder named, else Debian's copy, else a download into ``download_to``."""
    if source is not None:
        return Path(source)
    if DEFAULT_SOURCE.is_dir():
        return DEFAULT_SOURCE
    if download_to is not None:
        return download(Path(download_to))
    raise DatasetError("Fashion-MNIST not found: install Debian's dataset-fashion-mnist, pass --source DIR, "
                       "or pass --download-to DIR to fetch it", str(DEFAULT_SOURCE))


# ---------------------------------------------------------------- rendering


@dataclass
class Rendered:
    image: np.ndarray  # H x W x 3 uint8 RGB
    mask: np.ndarray  # H x W bool, the item's own pixels
    box: np.ndarray  # [x0, y0, x1, y1], half-open: the tight box of ``mask``


def tight_box(mask: np.ndarray) -> np.ndarray:
    """Half-open bounding box of the nonzero pixels of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def colour_noise(size: int, contrast: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth colour noise around a random base colour; ``contrast`` scales its swing."""
    coarse = cv2.resize(rng.random((4, 4, 3), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.random((9, 9, 3), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    base = rng.uniform(0.15, 0.85, 3).astype(np.float32)
    return np.clip(base + contrast * (0.45 * (coarse - 0.5) + 0.2 * (fine - 0.5)), 0, 1)


def _tint(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """A random colour, redrawn a few times while it is close to the background's mean colour."""
    for _ in range(8):
        colour = rng.random(3, dtype=np.float32)
        if np.linalg.norm(colour - avoid) > 0.35:
            break
    return colour


def _paste(canvas: np.ndarray, intensity: np.ndarray, colour: np.ndarray, x: int, y: int) -> np.ndarray:
    """Alpha-blend an intensity patch in ``colour`` (shaded by intensity); returns the patch's mask."""
    mask = intensity > ITEM_THRESHOLD
    alpha = np.where(mask, np.clip(0.3 + 2.0 * intensity, 0, 1), 0).astype(np.float32)[..., None]
    shade = colour * (0.35 + 0.65 * intensity[..., None])
    h, w = intensity.shape
    region = canvas[y:y + h, x:x + w]
    region[...] = region * (1 - alpha) + shade * alpha
    return mask


def _fragment(item: np.ndarray, display: int, rng: np.random.Generator) -> np.ndarray:
    """A square piece of an item around one of its bright pixels, resized to ``display`` pixels."""
    side = item.shape[0]
    window = int(rng.integers(9, 17))
    bright = np.flatnonzero(item > 0.3)
    centre = bright[rng.integers(len(bright))] if len(bright) else side * side // 2
    cy, cx = divmod(int(centre), side)
    top = int(np.clip(cy - window // 2, 0, side - window))
    left = int(np.clip(cx - window // 2, 0, side - window))
    piece = item[top:top + window, left:left + window]
    return np.clip(cv2.resize(piece, (display, display), interpolation=cv2.INTER_LINEAR), 0, 1)


def render(item: np.ndarray, others: list[np.ndarray], config: BenchmarkConfig, rng: np.random.Generator) -> Rendered:
    """One cluttered image of ``item`` (28 x 28 uint8) with fragments of ``others`` underneath it."""
    size = config.canvas
    canvas = colour_noise(size, config.contrast, rng)
    mean_colour = canvas.reshape(-1, 3).mean(0)
    item_side = int(rng.integers(config.item_min, config.item_max + 1))
    for other in others:
        display = int(np.clip(round(rng.uniform(9, 17) * item_side / 28 * rng.uniform(0.7, 1.1)), 4, size // 2))
        piece = _fragment(other.astype(np.float32) / 255, display, rng)
        x, y = (int(v) for v in rng.integers(0, size - display + 1, 2))
        _paste(canvas, piece, _tint(rng, mean_colour), x, y)
    scaled = np.clip(cv2.resize(item.astype(np.float32) / 255, (item_side, item_side), interpolation=cv2.INTER_LINEAR), 0, 1)
    x, y = (int(v) for v in rng.integers(0, size - item_side + 1, 2))
    item_mask = _paste(canvas, scaled, _tint(rng, mean_colour), x, y)
    if not item_mask.any():
        raise DatasetError("a Fashion-MNIST item has no pixel above the item threshold")
    mask = np.zeros((size, size), bool)
    mask[y:y + item_side, x:x + item_side] = item_mask
    noisy = canvas + rng.normal(0, config.noise, canvas.shape).astype(np.float32)
    image = np.round(np.clip(noisy, 0, 1) * 255).astype(np.uint8)
    return Rendered(image, mask, tight_box(mask))


def render_split(images: np.ndarray, config: BenchmarkConfig, split: str, index: int, order: np.ndarray) -> tuple[int, Rendered]:
    """(source item index, rendering) of image ``index`` of a split: depends on (seed, split, index) only."""
    rng = np.random.default_rng([config.seed, SPLIT_CODES[split], index])
    source = int(order[index % len(order)])
    count = int(rng.integers(config.distractors_min, config.distractors_max + 1))
    picks = (source + 1 + rng.integers(0, len(images) - 1, count)) % len(images) if len(images) > 1 else []
    return source, render(images[source], [images[int(p)] for p in picks], config, rng)


# ---------------------------------------------------------------- writing the CUB layout


def _class_folder(label: int) -> str:
    return f"{label + 1:02d}." + CLASS_NAMES[label].replace("/", "_").replace(" ", "_")


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    path.write_bytes(data.tobytes())


def streams(config: BenchmarkConfig, test_items: int) -> list[tuple[str, str, int, int]]:
    """(split written, Fashion-MNIST split its items come from, first stream index, images) of each split.

    The validation images follow the test images in the test stream, whose items are a permutation
    of the test source: while both fit in it, no validation item is a test item.
    """
    if config.val and config.test + config.val > test_items:
        raise DatasetError(f"{config.test} test and {config.val} validation images need {config.test + config.val} "
                           f"Fashion-MNIST test items, the source has {test_items}: the validation items would "
                           "repeat test items")
    return [("train", "train", 0, config.train), ("test", "test", 0, config.test),
            ("val", "test", config.test, config.val)]


def generate(out: str | Path, config: BenchmarkConfig = BenchmarkConfig(), source: str | Path | None = None,
             overwrite: bool = False, progress: bool = True) -> dict:
    """Write the benchmark under ``out`` in the CUB layout plus masks/; returns a summary."""
    out = Path(out)
    if (out / "images.txt").exists() and not overwrite:
        raise DatasetError("a dataset is already here; pass overwrite=True (--overwrite) to replace it", str(out))
    for name in ("images", "masks"):
        shutil.rmtree(out / name, ignore_errors=True)
    for label in range(len(CLASS_NAMES)):
        (out / "images" / _class_folder(label)).mkdir(parents=True, exist_ok=True)
        (out / "masks" / _class_folder(label)).mkdir(parents=True, exist_ok=True)
    folder = find_source(source)
    lists: dict[str, list[str]] = {"images": [], "labels": [], "split": [], "boxes": []}
    summary: dict = {"config": asdict(config), "source": {}, "splits": {}}
    started = time.perf_counter()
    bar = tqdm(total=config.train + config.test + config.val, desc="rendering", unit="img", disable=not progress)
    image_id = 0
    sources = {split: load_fashion_mnist(folder, split) for split in SOURCE_FILES}
    for split, (images, _) in sources.items():
        summary["source"][split] = {"items": len(images), "sha256": hashlib.sha256(images.tobytes()).hexdigest()[:16]}
    for split, source, first, count in streams(config, len(sources["test"][0])):
        images, labels = sources[source]
        order = np.random.default_rng([config.seed, SPLIT_CODES[source]]).permutation(len(images))
        counts = np.zeros(len(CLASS_NAMES), int)
        box_area = 0.0
        for index in range(count):
            item, rendered = render_split(images, config, source, first + index, order)
            label = int(labels[item])
            image_id += 1
            relative = f"{_class_folder(label)}/{split}_{index:05d}.png"
            _write_png(out / "images" / relative, rendered.image[:, :, ::-1])
            _write_png(out / "masks" / relative, rendered.mask.astype(np.uint8) * 255)
            x0, y0, x1, y1 = (int(v) for v in rendered.box)
            lists["images"].append(f"{image_id} {relative}")
            lists["labels"].append(f"{image_id} {label + 1}")
            lists["split"].append(f"{image_id} {SPLIT_FLAGS[split]}")
            lists["boxes"].append(f"{image_id} {x0} {y0} {x1 - x0} {y1 - y0}")
            counts[label] += 1
            box_area += (x1 - x0) * (y1 - y0) / config.canvas ** 2
            bar.update()
        summary["splits"][split] = {"images": count, "per_class": counts.tolist(),
                                    "mean_box_area": round(box_area / max(count, 1), 4)}
    bar.close()
    for name, key in (("images.txt", "images"), ("image_class_labels.txt", "labels"),
                      ("train_test_split.txt", "split"), ("bounding_boxes.txt", "boxes")):
        (out / name).write_text("\n".join(lists[key]) + "\n")
    (out / "classes.txt").write_text("".join(f"{i + 1} {name}\n" for i, name in enumerate(CLASS_NAMES)))
    (out / "benchmark.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


def differences(root: str | Path, config: BenchmarkConfig) -> dict[str, tuple]:
    """{field: (found, wanted)} where the benchmark in ``root`` was generated with another config (or none).

    Reusing a folder rendered by an older generator would score a model on other images than
    its recipe names, so callers regenerate or refuse when this is not empty.
    """
    description = Path(root) / "benchmark.json"
    try:
        found = json.loads(description.read_text()).get("config", {})
    except (OSError, ValueError):
        found = {}
    # A field the benchmark's generator did not have yet was, in effect, at its default (no validation split).
    found = {**asdict(BenchmarkConfig()), **found} if found else {}
    wanted = asdict(config)
    return {key: (found.get(key), value) for key, value in wanted.items() if found.get(key) != value}


def main(argv: list[str] | None = None) -> int:
    defaults = BenchmarkConfig()
    parser = argparse.ArgumentParser(prog="python -m tscam_core.datasets.fashion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder (CUB layout + masks/)")
    parser.add_argument("--source", type=Path, help=f"folder with the Fashion-MNIST idx(.gz) files (default {DEFAULT_SOURCE})")
    parser.add_argument("--download-to", type=Path, help="download Fashion-MNIST here when no local copy exists")
    parser.add_argument("--train", type=int, default=defaults.train, help="training images (items from Fashion-MNIST train)")
    parser.add_argument("--test", type=int, default=defaults.test, help="test images (items from Fashion-MNIST t10k)")
    parser.add_argument("--val", type=int, default=defaults.val,
                        help="validation images (t10k items that no test image shows; split 'val')")
    parser.add_argument("--canvas", type=int, default=defaults.canvas, help="image side in pixels")
    parser.add_argument("--item-min", type=int, default=defaults.item_min, help="smallest item side in pixels")
    parser.add_argument("--item-max", type=int, default=defaults.item_max, help="largest item side in pixels")
    parser.add_argument("--distractors-min", type=int, default=defaults.distractors_min, help="fewest distractor fragments")
    parser.add_argument("--distractors-max", type=int, default=defaults.distractors_max, help="most distractor fragments")
    parser.add_argument("--noise", type=float, default=defaults.noise, help="pixel noise standard deviation (0-1 scale)")
    parser.add_argument("--contrast", type=float, default=defaults.contrast,
                        help="swing of the background's colour noise (0: flat colour, 1: strongest)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="same seed, byte-identical output")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    args = parser.parse_args(argv)
    try:
        config = BenchmarkConfig(args.train, args.test, args.canvas, args.item_min, args.item_max,
                                 args.distractors_min, args.distractors_max, args.noise, args.contrast, args.seed,
                                 args.val)
        source = args.source if args.source is not None else find_source(None, args.download_to)
        summary = generate(args.out, config, source, overwrite=args.overwrite)
    except (DatasetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for split, info in summary["splits"].items():
        print(f"{split}: {info['images']} images, per class {info['per_class']}, mean box area {info['mean_box_area']:.1%}")
    print(f"wrote {args.out} in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
