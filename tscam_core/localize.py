"""Image in, maps and boxes out: the path the demo, the dashboard and the evaluation share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from .boxes import box_from_map, upsample_map
from .explanation import DEFAULT_MAP, Explanation, MapSpec
from .images import ImageSource, load_image
from .model import TSCAM
from .transforms import Preprocess, to_tensor


@torch.no_grad()
def explain_images(model: TSCAM, images: Sequence[Image.Image]) -> Explanation:
    """One forward pass over RGB images, each put through the checkpoint's preprocessing."""
    transform = _preprocess(model)
    return explain_inputs(model, [transform.geometry(image)[0] for image in images])


@torch.no_grad()
def explain_inputs(model: TSCAM, inputs: Sequence[Image.Image]) -> Explanation:
    """One forward pass over images already in the model's input frame (``Preprocess.geometry``'s)."""
    return model.explain(input_batch(model, inputs)).to("cpu")


def input_batch(model: nn.Module, inputs: Sequence[Image.Image]) -> Tensor:
    """Images already in the model's input frame as the normalised batch it takes, on its device: what a
    caller keeps (uint8, input-sized) to run the model on an image again without its original."""
    transform = _preprocess(model)
    device = next(model.parameters()).device
    return torch.stack([to_tensor(image, transform.mean, transform.std) for image in inputs]).to(device)


def _preprocess(model: nn.Module) -> Preprocess:
    info = getattr(model, "info", None)
    if info is None:
        raise ValueError("this model carries no preprocessing (model.info): load it with tscam_core.load_model, "
                         "or build it with tscam_core.build_model(ModelInfo(...))")
    return info.transform


@dataclass
class Localization:
    """One class's map for one image, at the image's size, and the box it gives."""

    class_index: int
    score: float
    map01: np.ndarray
    box: np.ndarray


def localize(
    explanation: Explanation,
    class_index: int,
    size: tuple[int, int],
    threshold: float,
    spec: MapSpec = DEFAULT_MAP,
    image_index: int = 0,
) -> Localization:
    """The map of ``class_index`` upsampled to ``size`` = (height, width), and its official box.

    The map covers the model's input frame. Pass ``model.info.transform.input_size`` (the paper's
    protocol, as the evaluation scores it) and map the box back with the transform's
    ``boxes_to_original``: that is right for every preprocessing, a center crop included. The
    original image's size is right only where the preprocessing resizes the whole image, no crop.
    """
    one = explanation.select(image_index)
    classes = torch.tensor([[class_index]])
    cam = one.maps(spec, classes)[0, 0]
    map01 = upsample_map(cam, size)
    score = float(one.probabilities()[0, class_index])
    return Localization(class_index, score, map01, box_from_map(map01, threshold))


def explain_file(model: TSCAM, source: ImageSource) -> tuple[Image.Image, Explanation]:
    """Load any image source safely and explain it; the image returned is the RGB one explained."""
    image = load_image(source)
    return image, explain_images(model, [image])
