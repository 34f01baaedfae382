"""Which maps of an ``Explanation`` the protocol scores, laid out as ``scoring.Protocol`` reads them, and
the protocol run batch after batch over a data loader (training's validation, the results doc's
threshold choice)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from contextlib import nullcontext

import numpy as np
import torch

from .. import methods
from ..explanation import Explanation, MapSpec, variants_for
from ..methods import Method
from .scoring import Backend, ImageMaps, ImageRecord, Protocol, score_images
from .summary import layer_name


def named_maps(main: MapSpec | None, depth: int) -> tuple[dict[str, MapSpec], tuple[str, ...]]:
    """Every map variant (over the main map's blocks) and TS-CAM over each first-k blocks, by name, and
    the names the main map itself answers for (its variant; its layer count where it is TS-CAM over
    the first k blocks). No main map (a method that is not a view of the explanation): none."""
    if main is None:
        return {}, ()
    named = {name: dataclasses.replace(main, variant=name) for name in variants_for(depth)}
    named.update({layer_name(k): MapSpec("tscam", f"first:{k}", main.signed) for k in range(1, depth + 1)})
    chosen = main.indices(depth)
    counts = [layer_name(len(chosen))] if main.variant == "tscam" and chosen == list(range(len(chosen))) else []
    return named, (main.variant, *counts)


def batch_maps(explanation: Explanation, labels: torch.Tensor, top1: torch.Tensor, main: MapSpec,
               named: Mapping[str, MapSpec], protocol: Protocol) -> np.ndarray:
    """B x M x h x w maps, as ``protocol`` lays out the channels: the GT and top-1 classes' ``main``
    maps, then the GT class's map of each name with a channel of its own. Selected where the
    explanation lives (the GPU, if any); only these travel to the CPU, in one tensor."""
    gt_only = labels[:, None]
    return torch.cat([
        explanation.maps(main, torch.stack([labels, top1], dim=1)),
        *(explanation.maps(named[name], gt_only) for name in protocol.channels),
    ], dim=1).float().cpu().numpy()


def scored_maps(method: Method, model: torch.nn.Module, images: torch.Tensor, explanation: Explanation,
                labels: torch.Tensor, top1: torch.Tensor, named: Mapping[str, MapSpec], protocol: Protocol) -> np.ndarray:
    """The batch's maps as ``protocol`` lays out the channels: of a method that is a view of the
    explanation, ``batch_maps``; of any other, the GT and top-1 classes' maps alone (no named map has
    a channel), from the method's own passes over ``images`` (a gradient method turns gradients on
    itself, under the evaluation's no_grad)."""
    if method.spec is not None:
        return batch_maps(explanation, labels, top1, method.spec, named, protocol)
    return method(model, images, torch.stack([labels, top1], dim=1)).float().cpu().numpy()


@torch.no_grad()
def score_loader(model: torch.nn.Module, loader: Iterable[dict], protocol: Protocol, method: Method | None = None,
                 autocast_dtype: torch.dtype | None = None, backend: Backend | None = None) -> Iterator[ImageRecord]:
    """Each image's record, batch after batch of ``loader`` (``TorchWSOL`` items, boxes in the input
    frame), with the model in eval mode; its train mode is restored after. A protocol without an
    input size takes the images'; without ``method``, the model's own map is scored
    (``methods.own``: TS-CAM's over every block, SCM's, or a CNN's CAM)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    method = method or methods.own(model)
    named = named_maps(method.spec, model.depth)[0]
    try:
        for batch in loader:
            images = batch["image"].to(device)
            autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
            with autocast:
                explanation = model.explain(images)
            labels = batch["label"].to(device)
            ranked = explanation.logits.float().topk(min(5, explanation.logits.shape[1]), dim=1).indices
            sized = protocol if protocol.input_size else dataclasses.replace(protocol, input_size=tuple(images.shape[-2:]))
            maps = scored_maps(method, model, images, explanation, labels, ranked[:, 0], named, sized)
            labels, ranked = labels.cpu(), ranked.cpu()
            yield from score_images([
                ImageMaps(maps[k], int(labels[k]), ranked[k].tolist(), batch["boxes"][k].numpy().reshape(-1, 4))
                for k in range(len(labels))], sized, backend)
    finally:
        model.train(was_training)
