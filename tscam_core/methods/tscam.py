"""TS-CAM (Gao et al., ICCV 2021) and the variants of its Table 5: views of one ``Explanation``.

The maps are ``Explanation.maps`` of a ``MapSpec`` (``tscam_core/explanation.py``), from one
forward pass that gives every class; nothing is computed here. ``from_spec`` names any spec,
a block selection or the signed S_c included (``tscam@last:4+signed``).
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from ..explanation import VARIANTS, MapSpec
from .registry import Method, Need, register

NEEDS: dict[str, frozenset[Need]] = {
    "tscam": frozenset({"attention", "tscam_head"}),
    "trans_attention": frozenset({"attention"}),
    "trans_cam": frozenset({"tscam_head"}),
    "cam": frozenset({"cam_head"}),
}


def explained_maps(spec: MapSpec, model: nn.Module, images: Tensor, classes: Tensor) -> Tensor:
    return model.explain(images).maps(spec.check(model.depth), classes)


def from_spec(spec: MapSpec) -> Method:
    """The method whose maps are ``Explanation.maps(spec)``; its name is the spec's key."""
    return Method(spec.key, spec.label, NEEDS[spec.variant], "forward", partial(explained_maps, spec), spec)


for _variant in VARIANTS:
    register(from_spec(MapSpec(_variant)))
