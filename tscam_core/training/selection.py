"""Validation and the final choice: the accuracies an epoch is judged by, the checkpoint a run ends
with and the CAM threshold it is tested at."""

from __future__ import annotations

import dataclasses
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..boxes import box_from_map, upsample_map
from ..checkpoint import ModelInfo, load_state, read_checkpoint, save_checkpoint
from ..cnn_cam import CNNCAM
from ..datasets import open_dataset
from ..explanation import MapSpec
from ..metrics import LocalizationAccumulator, Overlap, ThresholdCurve, largest_box_ious
from ..model import TSCAM
from ..recipes import TrainConfig
from .models import build_training_model

if TYPE_CHECKING:
    from .data import TrainingData
    from .run_folder import RunFolder


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


def finish_run(config: TrainConfig, folder: RunFolder, data: TrainingData, device: torch.device,
               amp: torch.dtype | None) -> dict[str, Any] | None:
    """Pick the final checkpoint on fresh validation, evaluate it on the test split at the threshold
    chosen on validation, and export it.

    The candidates are the saved best and last epochs, validated again rather than trusted from
    their epoch's record: the choice and the threshold then follow the current map code, so
    ``--resume`` on a finished run re-exports it after a change there.
    """
    if not folder.best.exists():
        return None
    model, info, validated = _choose_checkpoint(config, folder, data, device, amp)
    validation = {"split": data.val_data.split, **{k: v for k, v in validated.items() if k != "curve"}}
    evaluation: dict[str, Any] = {"validation": validation, "recipe": "train/run.py --preset "
                                  f"{config.preset}" if config.preset else "train/run.py"}
    if config.test_split:
        evaluation["test"] = _test(model, config, data, float(validation["best_threshold"]))
    info.evaluation = evaluation
    save_checkpoint(model, info, folder.best)
    if config.export:
        save_checkpoint(model, info, Path(config.export))
    return evaluation


def _choose_checkpoint(config: TrainConfig, folder: RunFolder, data: TrainingData, device: torch.device,
                       amp: torch.dtype | None) -> tuple[TSCAM | CNNCAM, ModelInfo, dict[str, Any]]:
    """The better of the best and last checkpoints on Top-1 Loc at each one's best validation threshold."""
    loader = data.eval_loader(data.val_data)
    chosen = None
    for path in (folder.best, folder.last):  # in this order: the best wins ties
        if not path.exists():
            continue
        info, state = read_checkpoint(path)
        model = build_training_model(dataclasses.replace(config, pretrained=False, pretrained_file=""),
                                     data.num_classes)
        load_state(model, state, str(path))
        model.to(device).eval()
        validated = validate(model, loader, config.thresholds(), config.threshold, amp)
        if chosen is None or validated["top1_loc_best"] > chosen[2]["top1_loc_best"]:
            chosen = (model, info, validated)
    return chosen


def _test(model: TSCAM | CNNCAM, config: TrainConfig, data: TrainingData, chosen: float) -> dict[str, Any]:
    """The test split's accuracies at the threshold chosen on validation (and GT-known at the config's)."""
    test_data = open_dataset(config.data, config.test_split, config.dataset_kind, config.on_error)
    loader = data.eval_loader(test_data)
    test = evaluate_split(model, loader, data.num_classes, chosen)
    if chosen != config.threshold:
        test[f"gt_known_loc_at_{config.threshold}"] = evaluate_split(
            model, loader, data.num_classes, config.threshold)["gt_known_loc"]
    tqdm.write(f"test ({test['images']} images, CAM threshold {chosen} chosen on validation): top-1 "
               f"{test['top1_cls']:.1%}, GT-known Loc {test['gt_known_loc']:.1%}, "
               f"top-1 Loc {test['top1_loc']:.1%}", file=sys.stderr)
    return {"split": config.test_split, "cam_threshold_from": "validation split", **test}
