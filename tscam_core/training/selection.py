"""Validation and the final choice: the accuracies an epoch is judged by, the checkpoint a run ends
with and the CAM threshold it is tested at."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import methods
from ..checkpoint import ModelInfo, load_state, read_checkpoint, save_checkpoint
from ..cnn_cam import CNNCAM
from ..datasets import open_dataset
from ..explanation import variants_for
from ..methods import Method
from ..metrics import LocalizationAccumulator, ThresholdCurve, best_threshold
from ..model import TSCAM
from ..recipes import TrainConfig
from .models import build_training_model

if TYPE_CHECKING:
    from .data import TrainingData
    from .run_folder import RunFolder


@torch.no_grad()
def validate(model: TSCAM | CNNCAM, loader: DataLoader, thresholds: list[float], threshold: float,
             autocast_dtype: torch.dtype | None = None, method: Method | None = None) -> dict[str, Any]:
    """Top-1 classification and GT-known localization (official boxes, IoU >= 0.5) of ``method``'s maps:
    by default the model's own (``methods.own``: TS-CAM's M_c over every block, SCM's, a CNN's CAM).

    Boxes are compared in the model-input frame, where the loader's boxes already are.
    """
    from ..evaluate.maps import score_loader
    from ..evaluate.scoring import Protocol

    curve = ThresholdCurve(thresholds)
    correct = count = 0
    protocol = Protocol(cam_threshold=threshold, curve=np.asarray(thresholds, np.float64))
    for record in score_loader(model, loader, protocol, method, autocast_dtype):
        hit = record.hits.top1_cls
        curve.add(record.curve_ious, hit)
        correct += hit
        count += 1
    result = curve.result()
    gt_known = dict(zip(result["cam_thresholds"], result["gt_known"], strict=True))
    top1_loc = dict(zip(result["cam_thresholds"], result["top1"], strict=True))
    best = best_threshold(result["cam_thresholds"], result["gt_known"], threshold)
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
    """The paper's five accuracies and error analysis at one CAM threshold, of the model's own map
    (``methods.own``)."""
    from ..evaluate.maps import score_loader
    from ..evaluate.scoring import Protocol

    accumulator = LocalizationAccumulator(num_classes)
    for record in score_loader(model, loader, Protocol(cam_threshold=threshold)):
        accumulator.add(record.gt_class, record.top_classes, record.top1, record.gt_known_iou)
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
    validation["maps"] = validate_maps(model, data.eval_loader(data.val_data), config, amp)
    evaluation: dict[str, Any] = {"validation": validation, "recipe": "train/run.py --preset "
                                  f"{config.preset}" if config.preset else "train/run.py"}
    if config.test_split:
        evaluation["test"] = _test(model, config, data, float(validation["best_threshold"]))
    info.evaluation = evaluation
    save_checkpoint(model, info, folder.best)
    if config.export:
        save_checkpoint(model, info, Path(config.export))
    return evaluation


def validate_maps(model: TSCAM | CNNCAM, loader: DataLoader, config: TrainConfig,
                  amp: torch.dtype | None) -> dict[str, dict[str, float]]:
    """Each map variant's best GT-known Loc on the validation images and the threshold it has it at, so
    a viewer can open on the map that localizes best on held-out images rather than on the model's own."""
    scores = {}
    for variant in variants_for(model.depth):
        validated = validate(model, loader, config.thresholds(), config.threshold, amp, methods.get(variant))
        scores[variant] = {key: validated[key] for key in ("best_threshold", "gt_known_loc_best", "top1_loc_best")}
    return scores


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
