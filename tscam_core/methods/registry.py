"""What a localization method is, what it needs of a model, and the table of every method by name.

A method is a function from (model, images, target classes) to maps, one per target: its
definition lives in its own module, which registers it here. The table says, before anything
runs, which methods a model can give (its needs) and what each costs, so a picker offers only
what works and says which maps take a backward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..cnn_cam import CNNCAM
from ..explanation import MapSpec
from ..model import TSCAM
from ..scm import SCM

#: What a method needs of the model it explains.
Need = Literal["attention", "tscam_head", "cam_head", "tokens", "scm_trained"]
NEED_LABELS: dict[str, str] = {
    "attention": "the attention of a ViT's blocks (a TS-CAM model)",
    "tscam_head": "per-token class maps S_c from a TS-CAM head (conv, or a classifier applied to every token)",
    "cam_head": "a CNN CAM model's class maps",
    "tokens": "a ViT's patch tokens (a TS-CAM model)",
    "scm_trained": "a backbone trained through SCM's spatial calibration (an SCM model, --model-family scm)",
}
#: How a method's cost grows: one forward pass gives the maps of every class, or each class asks
#: for a backward pass of its own.
Cost = Literal["forward", "forward+backward"]
COST_LABELS: dict[str, str] = {
    "forward": "one forward pass, every class",
    "forward+backward": "a forward and a backward pass per class",
}

#: (model, images B x 3 x H x W, classes B x K indices) -> maps B x K x h x w.
MapFunction = Callable[[nn.Module, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Method:
    """A localization method: its name, what it needs, what it costs, and the function that makes its maps.

    ``spec`` is set for the methods that are views of one ``Explanation`` (TS-CAM, its Table 5
    variants, CNN CAM): the map ``Explanation.maps`` gives for it, so a caller that already
    holds the explanation needs no further pass.
    """

    name: str
    label: str
    needs: frozenset[Need]
    cost: Cost
    function: MapFunction
    spec: MapSpec | None = None

    @property
    def gradients(self) -> bool:
        """Whether the maps take a backward pass (run on demand, not with every forward)."""
        return self.cost == "forward+backward"

    def fits(self, model: nn.Module) -> bool:
        return self.needs <= provides(model)

    def record(self) -> dict[str, str]:
        """What a results folder keeps of it (summary.json's ``settings.method``, docs/results-format.md)."""
        return {"name": self.name, "label": self.label, "cost": self.cost}

    def check(self, model: nn.Module) -> Method:
        """This method, if ``model`` has what it needs; else a ValueError naming the first need it lacks."""
        missing = sorted(self.needs - provides(model))
        if missing:
            raise ValueError(f"method {self.name!r} needs {NEED_LABELS[missing[0]]}; "
                             f"{type(model).__name__} has none")
        return self

    def __call__(self, model: nn.Module, images: Tensor, classes: Tensor) -> Tensor:
        """The maps of ``classes`` (B x K indices) for each image: B x K x h x w, float32, on the images' device.

        h x w is the token grid for the attention methods and the input size for pytorch-grad-cam's
        (which resizes its maps itself): the protocol upsamples either to the input.
        """
        self.check(model)
        _check_batch(model, images, classes)
        maps = self.function(model, images, classes.to(images.device).long())
        return maps.to(device=images.device, dtype=torch.float32)


def provides(model: nn.Module) -> frozenset[Need]:
    """What ``model`` offers the methods' needs."""
    if isinstance(model, SCM):
        return frozenset({"attention", "tscam_head", "tokens", "scm_trained"})
    if isinstance(model, TSCAM):
        return frozenset({"attention", "tscam_head", "tokens"})
    if isinstance(model, CNNCAM):
        return frozenset({"cam_head"})
    return frozenset()


def _check_batch(model: nn.Module, images: Tensor, classes: Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be a B x C x H x W batch, got shape {tuple(images.shape)}")
    if classes.ndim != 2 or classes.shape[0] != images.shape[0]:
        raise ValueError(f"classes must be B x K indices for a batch of {images.shape[0]}, "
                         f"got shape {tuple(classes.shape)}")
    if classes.dtype.is_floating_point or classes.dtype == torch.bool or classes.is_complex():
        raise TypeError(f"classes must be integer indices, got {classes.dtype}")
    outside = classes[(classes < 0) | (classes >= model.num_classes)]
    if outside.numel():
        raise ValueError(f"class index {int(outside[0])} is outside 0..{model.num_classes - 1}")


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the table under its name (a second method of that name is refused)."""
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method
