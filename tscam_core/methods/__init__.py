"""Localization methods by name: model, images and target classes in, one map per target out.

    from tscam_core import methods
    method = methods.get("rollout")              # or "tscam", "tscam@last:4", "chefer_generic", "gradcam", ...
    maps = method(model, images, classes)        # B x K x h x w for classes B x K
    [m.name for m in methods.available(model)]   # what this model can give
    methods.for_model("rollout", model)          # that method, or a ValueError naming what the model lacks
    method.cost, method.needs                    # "forward" or "forward+backward"; attention, a TS-CAM head, ...

Each method is one module here that registers itself (``registry.register``): TS-CAM and its
Table 5 variants (``tscam``), CNN CAM (``cnn_cam``), attention rollout (``rollout``), SCM's map
of an SCM-trained model (``scm``), Chefer et al.'s generic gradient-weighted attention (``chefer``)
and pytorch-grad-cam's GradCAM family (``gradcam``).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from ..explanation import MapSpec, variants_for
from . import chefer, cnn_cam, gradcam, rollout, scm, tscam
from .registry import COST_LABELS, METHODS, NEED_LABELS, Cost, Method, Need, provides, register


def names() -> tuple[str, ...]:
    """Every method's name: the one-forward methods first (the TS-CAM maps leading), then the gradient ones."""
    return tuple(method.name for method in _in_order(METHODS.values()))


def get(name: str) -> Method:
    """The method called ``name``; a ``MapSpec`` key (``tscam@last:4+signed``) names a TS-CAM map of its own."""
    if name in METHODS:
        return METHODS[name]
    variant = name.partition("@")[0].partition("+")[0]
    if variant in METHODS and METHODS[variant].spec is not None:
        return tscam.from_spec(MapSpec.parse(name))
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(names())}")


def own(model: nn.Module) -> Method:
    """The map ``model`` was trained to give, which its training validates and tests: SCM's for an SCM
    model, else its explanation's own variant (TS-CAM's M_c, a CNN's CAM)."""
    if METHODS["scm"].fits(model):
        return METHODS["scm"]
    return METHODS[variants_for(model.depth)[0]]


def available(model: nn.Module) -> tuple[Method, ...]:
    """The methods ``model`` has what they need for, in the order of ``names``."""
    return tuple(method for method in _in_order(METHODS.values()) if method.fits(model))


def for_model(method: str | Method, model: nn.Module) -> Method:
    """``method`` (a name for ``get``) if ``model`` can give its maps; else a ValueError saying why: the
    map variant or blocks of a TS-CAM map the model does not have, or what the method needs and the
    methods this model can give."""
    method = get(method) if isinstance(method, str) else method
    if method.spec is not None:
        try:
            method.spec.check(model.depth)
        except ValueError as error:
            raise ValueError(f"method {method.name!r}: {error}") from None
    try:
        return method.check(model)
    except ValueError as error:
        offered = ", ".join(m.name for m in available(model)) or "none"
        raise ValueError(f"{error}; the methods it can give: {offered}") from None


def _in_order(methods: Iterable[Method]) -> list[Method]:
    return sorted(methods, key=lambda method: method.gradients)  # stable: registration order within a cost


__all__ = ["COST_LABELS", "NEED_LABELS", "Cost", "Method", "Need", "available", "chefer", "cnn_cam", "for_model",
           "get", "gradcam", "names", "own", "provides", "register", "rollout", "scm", "tscam"]
