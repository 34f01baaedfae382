"""Validation: the accuracies an epoch is judged by and the CAM threshold a run is tested at."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..boxes import box_from_map, upsample_map
from ..cnn_cam import CNNCAM
from ..explanation import MapSpec
from ..metrics import LocalizationAccumulator, Overlap, ThresholdCurve, largest_box_ious
from ..model import TSCAM


@torch.no_grad()
def validate(model: TSCAM | CNNCAM, loader: DataLoader, thresholds: list[float], threshold: float,
             autocast_dtype: torch.dtype | None = None, spec: MapSpec | None = None) -> dict[str, Any]:
    """Top-1 classification and GT-known localization (official boxes, IoU >= 0.5) of the map ``spec``
    names: by default the model's own (TS-CAM's M_c over every block, or a CNN's CAM).

    Boxes are compared in the model-input frame, where the loader's boxes already are.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    curve = ThresholdCurve(thresholds)
    correct = count = 0
    for batch in loader:
        images = batch["image"].to(device)
        labels = batch["label"]
        autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
        with autocast:
            explanation = model.explain(images)
        explanation = explanation.to("cpu")
        predicted = explanation.logits.argmax(dim=1)
        maps = explanation.maps(spec or MapSpec(explanation.variants[0]), labels[:, None])[:, 0].float()
        size = tuple(images.shape[-2:])
        for k in range(len(labels)):
            cam01 = upsample_map(maps[k], size)
            hit = bool(predicted[k] == labels[k])
            curve.add(largest_box_ious(cam01, batch["boxes"][k].numpy(), thresholds), hit)
            correct += hit
            count += 1
    model.train(was_training)
    result = curve.result()
    gt_known = dict(zip(result["cam_thresholds"], result["gt_known"], strict=True))
    top1_loc = dict(zip(result["cam_thresholds"], result["top1"], strict=True))
    best = max(result["cam_thresholds"], key=lambda t: (gt_known[t], -abs(t - threshold)))
    return {
        "images": count,
        "top1_cls": correct / max(count, 1),
        "gt_known_loc": gt_known[threshold],
        "top1_loc": top1_loc[threshold],
        "threshold": threshold,
        "best_threshold": best,
        "gt_known_loc_best": gt_known[best],
        "top1_loc_best": top1_loc[best],
        "curve": result,
    }


@torch.no_grad()
def evaluate_split(model: TSCAM | CNNCAM, loader: DataLoader, num_classes: int, threshold: float) -> dict[str, Any]:
    """The paper's five accuracies and error analysis at one CAM threshold (the model's own maps, all blocks)."""
    model.eval()
    device = next(model.parameters()).device
    accumulator = LocalizationAccumulator(num_classes)
    for batch in loader:
        images = batch["image"].to(device)
        labels = batch["label"]
        explanation = model.explain(images).to("cpu")
        ranked = explanation.logits.float().topk(min(5, num_classes), dim=1).indices
        classes = torch.stack([labels, ranked[:, 0]], dim=1)
        maps = explanation.maps(MapSpec(explanation.variants[0]), classes).float()
        size = tuple(images.shape[-2:])
        for k in range(len(labels)):
            gts = batch["boxes"][k].numpy()
            gt_iou = float(largest_box_ious(upsample_map(maps[k, 0], size), gts, [threshold])[0])
            top1_box = box_from_map(upsample_map(maps[k, 1], size), threshold)
            accumulator.add(int(labels[k]), ranked[k].tolist(), Overlap.of(top1_box, gts), gt_iou)
    result = accumulator.result()
    result.update(images=accumulator.count, threshold=threshold)
    return result
