"""What every dataset reader produces: samples with boxes in original-image pixels, and a torch view.

Readers are strict by default: a bad annotation raises a ``DatasetError`` naming the file and
line, because a silently dropped image changes every reported number. With ``on_error="skip"``
the problem is recorded in ``WSOLDataset.skipped`` instead, and the count is logged. An image
whose header reads but whose pixels do not is only found when it is decoded: ``TorchWSOL`` can
hand it on as a failure item (``report_failures``) for its consumer to raise or skip by the
dataset's ``on_error``.
"""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

import numpy as np
import torch
from PIL import Image

from ..errors import DatasetError, TSCAMError
from ..images import MAX_PIXELS, load_image
from ..transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
    as_size,
    hflip,
    random_crop,
    resize,
    to_tensor,
)

log = logging.getLogger("tscam_core.datasets")

OnError = Literal["raise", "skip"]

#: How far (in pixels) a box may reach past the image border before it counts as outside.
BOX_TOLERANCE = 1.0

#: One skipped annotation: (file, line or None, reason).
Skip = tuple[str, int | None, str]


@dataclass
class Sample:
    """One image and its ground truth; ``boxes`` is K x 4 float32, half-open, original pixels."""

    image_id: str
    path: Path
    label: int
    boxes: np.ndarray
    mask_path: Path | None = None


class Problems:
    """Raises each problem, or collects it, as the caller asked."""

    def __init__(self, on_error: OnError) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.skipped: list[Skip] = []

    def __call__(self, message: str, path: str | Path | None, line: int | None = None) -> None:
        if self.on_error == "raise":
            raise DatasetError(message, None if path is None else str(path), line)
        self.skipped.append((str(path), line, message))

    def add(self, error: DatasetError) -> None:
        """A problem found deeper down, already phrased with its own file and line."""
        if self.on_error == "raise":
            raise error
        self.skipped.append((str(error.path), error.line, str(error)))


@dataclass
class WSOLDataset(Sequence[Sample]):
    """A list of samples with class names; loads images through the project's safe loader."""

    root: Path
    split: str
    class_names: list[str]
    samples: list[Sample]
    skipped: list[Skip] = field(default_factory=list)
    on_error: OnError = "raise"  # what its consumers do with an image that cannot be decoded

    def __len__(self) -> int:
        return len(self.samples)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index):
        return self.samples[index]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self, index: int) -> tuple[Image.Image, Sample]:
        """The RGB image and its sample; the boxes are checked against the decoded size."""
        sample = self.samples[index]
        image = load_image(sample.path)
        problem = box_problem(sample.boxes, image.size)
        if problem:
            raise DatasetError(problem, str(sample.path))
        return image, sample

    def mask(self, index: int) -> np.ndarray | None:
        """The object mask as bool H x W, or None where the dataset has none."""
        mask_path = self.samples[index].mask_path
        if mask_path is None:
            return None
        return object_pixels(load_mask(mask_path))

    def summary(self) -> str:
        text = f"{self.root} [{self.split}]: {len(self)} images, {self.num_classes} classes"
        return text + (f", {len(self.skipped)} annotations skipped" if self.skipped else "")


#: Gray level above which a mask pixel is object: a majority, where a mask is the fraction of
#: annotators who marked the pixel (CUB-200-2011's segmentations), and any object pixel of a 0/255 mask.
OBJECT_LEVEL = 127


def load_mask(path: Path) -> Image.Image:
    """A mask file as an 8-bit gray image, with the checks of any image."""
    return load_image(path).convert("L")


def object_pixels(mask: Image.Image | np.ndarray) -> np.ndarray:
    """bool H x W: the pixels of a gray mask above ``OBJECT_LEVEL``."""
    return np.asarray(mask) > OBJECT_LEVEL


def finish(dataset: WSOLDataset) -> WSOLDataset:
    """Report skips once, where the user will see them."""
    if dataset.skipped:
        first = "; ".join(f"{f}:{ln}: {why}" if ln is not None else f"{f}: {why}" for f, ln, why in dataset.skipped[:3])
        log.warning("%s (first: %s)", dataset.summary(), first)
    return dataset


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of each non-blank line; a missing or undecodable list is always fatal."""
    if not path.is_file():
        raise DatasetError("annotation file not found", str(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"not a UTF-8 text file ({error.reason} at byte {error.start})", str(path)) from error
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def relative_path_problem(relative: str) -> str | None:
    """Why a listed path may not be used: it must stay inside the dataset folder."""
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts or not parts:
        return f"path {relative!r} must be relative and stay inside the dataset folder"
    return None


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header only, so checking every box stays cheap."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DatasetError(f"image cannot be read: {error}", str(path)) from error
    if width * height > MAX_PIXELS:
        raise DatasetError(f"image is {width}x{height}, over the limit of {MAX_PIXELS:,} pixels", str(path))
    return width, height


def box_problem(boxes: np.ndarray, size: tuple[int, int]) -> str | None:
    """Why these boxes do not fit a (width, height) image, or None when they do."""
    width, height = size
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4):
        if not (x1 > x0 and y1 > y0):
            return f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] is empty"
        if x0 < -BOX_TOLERANCE or y0 < -BOX_TOLERANCE or x1 > width + BOX_TOLERANCE or y1 > height + BOX_TOLERANCE:
            return f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] is outside the {width}x{height} image"
    return None


def clip_boxes(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    return np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0, [width, height, width, height]).astype(np.float32)


def open_dataset(root: str | Path, split: str = "test", kind: str = "auto", on_error: OnError = "raise") -> WSOLDataset:
    """Read a CUB-layout or ILSVRC dataset; ``kind="auto"`` tells them apart by their list files."""
    from .cub import is_cub, read_cub
    from .ilsvrc import is_ilsvrc, read_ilsvrc

    root = Path(root)
    if not root.is_dir():
        raise DatasetError("dataset folder does not exist", str(root))
    if kind == "auto":
        if is_cub(root):
            kind = "cub"
        elif is_ilsvrc(root):
            kind = "ilsvrc"
        else:
            raise DatasetError("neither a CUB layout (images.txt) nor ILSVRC (LOC_synset_mapping.txt) here", str(root))
    readers: dict[str, Callable[..., WSOLDataset]] = {"cub": read_cub, "ilsvrc": read_ilsvrc}
    if kind not in readers:
        raise ValueError(f"kind must be one of auto, {', '.join(readers)}; got {kind!r}")
    return finish(readers[kind](root, split, on_error))


@dataclass(frozen=True)
class TrainTransform:
    """The paper's training geometry: resize, random crop, horizontal flip; boxes follow."""

    resize: tuple[int, int]
    crop: tuple[int, int]
    flip: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def create(cls, resize_to: int | Sequence[int], crop: int | Sequence[int], flip: bool = True,
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> TrainTransform:
        return cls(as_size(resize_to), as_size(crop), flip, tuple(mean), tuple(std))

    def geometry(self, image: Image.Image, boxes: np.ndarray, rng: random.Random) -> tuple[Image.Image, np.ndarray]:
        image, boxes = resize(image, boxes, self.resize)
        image, boxes = random_crop(image, boxes, self.crop, rng)
        if self.flip and rng.random() < 0.5:
            image, boxes = hflip(image, boxes)
        return image, boxes


class TorchWSOL(torch.utils.data.Dataset):
    """A WSOLDataset as tensors: ``TrainTransform`` for training, ``Preprocess`` for testing.

    The augmentation of item ``i`` depends only on (seed, epoch, i), so it is the same with any
    number of workers or processes, and a resumed run sees the same crops. Call ``set_epoch``
    before building each epoch's iterator (not with ``persistent_workers``).
    """

    def __init__(self, dataset: WSOLDataset, transform: TrainTransform | Preprocess, seed: int = 0,
                 report_failures: bool = False) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        #: An image that cannot be loaded becomes ``{"index", "failure": Skip}``, which ``collate`` sets
        #: aside in the batch's "failed", instead of an exception: a data-loader worker's exception
        #: reaches the main process as a traceback, a failure item as data.
        self.report_failures = report_failures

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if not self.report_failures:
            return self._item(index)
        try:
            return self._item(index)
        except TSCAMError as error:  # ImageError (damaged pixels) or DatasetError (boxes off the image)
            return {"index": index, "failure": (str(self.dataset[index].path), None, str(error))}

    def _item(self, index: int) -> dict:
        image, sample = self.dataset.load(index)
        boxes = clip_boxes(sample.boxes, image.size)
        original = torch.tensor(image.size, dtype=torch.long)
        if isinstance(self.transform, TrainTransform):
            rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
            image, boxes = self.transform.geometry(image, boxes, rng)
        else:
            image, boxes = self.transform.geometry(image, boxes)
        return {
            "image": to_tensor(image, self.transform.mean, self.transform.std),
            "label": sample.label,
            "boxes": torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4)),
            "index": index,
            "size": original,
        }


def collate(batch: list[dict]) -> dict:
    """Stack a batch whose items have different numbers of boxes: ``boxes`` stays a list.

    Failure items (``TorchWSOL.report_failures``) are listed in "failed"; a batch of nothing but
    failures has no other key.
    """
    failed: list[Skip] = [item["failure"] for item in batch if "failure" in item]
    batch = [item for item in batch if "failure" not in item]
    if not batch:
        return {"failed": failed}
    return {
        "image": torch.stack([item["image"] for item in batch]),
        "label": torch.tensor([item["label"] for item in batch], dtype=torch.long),
        "boxes": [item["boxes"] for item in batch],
        "index": torch.tensor([item["index"] for item in batch], dtype=torch.long),
        "size": torch.stack([item["size"] for item in batch]),
        "failed": failed,
    }
