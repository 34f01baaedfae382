"""What a model knows: its classes' names and the domain it was trained on, for people to read.

A checkpoint trained here carries its class names. Sources that do not get them from here:
ImageNet classifiers (timm ships the synset descriptions), official TS-CAM release files (CUB-200-2011
or ImageNet, told apart by their class count) and a names file (one name a line) for anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .checkpoint import ModelInfo
from .errors import DatasetError

#: CUB-200-2011's classes.txt as the dataset ships it ("1 001.Black_footed_Albatross").
CUB_CLASSES_FILE = Path(__file__).resolve().parent / "data" / "cub200_classes.txt"
CUB = "CUB-200-2011"
#: Official TS-CAM releases: the dataset each class count belongs to.
OFFICIAL_DATASETS = {200: CUB, 1000: "ImageNet-1k"}
#: Datasets of this repository's training presets (recipe["preset"]).
PRESET_DATASETS = {
    "fashion": "Cluttered Fashion-MNIST (clothing items on a 64 px canvas)",
    "fashion-cnn": "Cluttered Fashion-MNIST (clothing items on a 64 px canvas)",
    "fashion-scm": "Cluttered Fashion-MNIST (clothing items on a 64 px canvas)",
    "cub": CUB,
    "ilsvrc": "ImageNet-1k",
}
#: A top-1 score below this makes the page warn that the image may lie outside the model's domain. A
#: high score proves nothing (the shipped clothing model gives a cat photo 67 % "Shirt"): the page
#: states the domain above the image whatever the score.
LOW_SCORE = 0.5


def placeholder_names(num_classes: int) -> list[str]:
    """The names a model without names gets (``ModelInfo``'s default)."""
    return [f"class {index}" for index in range(num_classes)]


def has_names(info: ModelInfo) -> bool:
    return info.class_names != placeholder_names(info.num_classes)


def imagenet_subset(num_classes: int) -> str | None:
    """timm's name of the ImageNet subset with ``num_classes`` classes (imagenet-1k, -21k, ...), else None."""
    from timm.data import infer_imagenet_subset

    return infer_imagenet_subset({"num_classes": num_classes})


@cache
def imagenet_names(num_classes: int) -> tuple[str, ...] | None:
    """The synset descriptions of the ImageNet subset with ``num_classes`` classes, else None."""
    subset = imagenet_subset(num_classes)
    if subset is None:
        return None
    from timm.data import ImageNetInfo

    info = ImageNetInfo(subset)
    return tuple(info.index_to_description(index) for index in range(num_classes))


@cache
def cub_names() -> tuple[str, ...]:
    """CUB-200-2011's 200 species in class-id order, readable ("Black footed Albatross")."""
    rows = CUB_CLASSES_FILE.read_text(encoding="utf-8").split("\n")
    return tuple(row.split(" ", 1)[1].split(".", 1)[1].replace("_", " ") for row in rows if row)


def official_names(num_classes: int) -> list[str] | None:
    """The class names of an official TS-CAM release with ``num_classes`` classes, where known."""
    if OFFICIAL_DATASETS.get(num_classes) == CUB:
        return list(cub_names())
    names = imagenet_names(num_classes)
    return None if names is None else list(names)


def read_class_names(path: str | Path, num_classes: int | None = None) -> list[str]:
    """One class name a line (blank lines at the end ignored); the count checked where given."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"not a readable text file of class names ({error})", str(path)) from error
    names = [line.strip() for line in lines]
    for number, name in enumerate(names, 1):
        if not name:
            raise DatasetError("empty class name", str(path), number)
    if num_classes is not None and len(names) != num_classes:
        raise DatasetError(f"{len(names)} class names for a {num_classes}-class model", str(path))
    return names


def find_class(class_names: Sequence[str], value: object) -> int | None:
    """The index of a class given by index (int or digits) or by name (exact, else case-insensitive);
    None for None or ""; a ValueError naming the problem otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"class {value!r} is neither a class index nor a class name")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, int):
        if not 0 <= value < len(class_names):
            raise ValueError(f"class index {value} is outside 0..{len(class_names) - 1}")
        return value
    if isinstance(value, str):
        if value in class_names:
            return list(class_names).index(value)
        folded = [name.casefold() for name in class_names]
        if value.casefold() in folded:
            return folded.index(value.casefold())
        raise ValueError(f"no class named {value!r} in this model's {len(class_names)} classes")
    raise ValueError(f"class {value!r} is neither a class index nor a class name")


@dataclass(frozen=True)
class Domain:
    """What a model knows, as the page states it above the image."""

    dataset: str
    num_classes: int
    input_size: tuple[int, int]  # (height, width)

    def describe(self) -> str:
        height, width = self.input_size
        return f"{self.dataset}: {self.num_classes} classes, {width}x{height} px input"


def domain_of(info: ModelInfo) -> Domain:
    """The dataset ``info``'s model was trained on, from its recipe or its origin; "an unnamed dataset"
    where neither says."""
    recipe = info.recipe
    dataset = recipe.get("dataset") if isinstance(recipe.get("dataset"), str) else None
    origin = str(recipe.get("origin", ""))
    if dataset is None and isinstance(recipe.get("preset"), str):
        dataset = PRESET_DATASETS.get(recipe["preset"])
    if dataset is None and origin == "official TS-CAM release":
        dataset = OFFICIAL_DATASETS.get(info.num_classes)
    if dataset is None and origin.startswith("timm pretrained"):
        subset = imagenet_subset(info.num_classes)
        dataset = subset.replace("imagenet", "ImageNet") if subset else None
    if dataset is None and isinstance(recipe.get("data"), str):
        dataset = f"the images of {Path(recipe['data']).name}"
    return Domain(dataset or "an unnamed dataset", info.num_classes, info.transform.input_size)


def outside_domain_note(domain: Domain, top_score: float) -> str | None:
    """A warning when the best class scores under LOW_SCORE: the image may be unlike the model's data."""
    if top_score >= LOW_SCORE:
        return None
    return (f"the model is unsure, its best class scores only {top_score:.1%}: the image may lie outside what "
            f"it knows ({domain.describe()}), or be a hard case, and its maps may mean little")
