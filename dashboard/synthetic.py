"""A synthetic results folder of any size, written through ``write_results``: for the dashboard's tests
and its load-time measurement. Its summary metrics are computed from its rows, so that a number the
dashboard shows can be checked against the table it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tscam_core.overlay import GT_COLOR, PRED_COLOR, DrawnBox, overlay
from tscam_core.results import Results, write_results
from tscam_core.summary import ERROR_TYPES

SIDE = 32


def synthetic_rows(num_images: int, num_classes: int, depth: int, seed: int = 0) -> pd.DataFrame:
    """Per-image rows of the documented format with random, internally consistent values."""
    rng = np.random.default_rng(seed)
    gt_class = rng.integers(0, num_classes, num_images)
    correct = rng.random(num_images) < 0.7
    top1 = np.where(correct, gt_class, (gt_class + rng.integers(1, max(2, num_classes), num_images)) % num_classes)
    others = np.argsort(rng.random((num_images, num_classes)), axis=1)
    scores = np.sort(rng.dirichlet(np.ones(num_classes), num_images), axis=1)[:, ::-1][:, :5]
    iou = rng.random(num_images)
    gt_known_iou = np.clip(iou + rng.normal(0.05, 0.1, num_images), 0, 1)
    located = iou >= 0.5
    error = np.where(~correct, "cls", np.where(located, "correct", rng.choice(ERROR_TYPES[2:], num_images)))
    top5 = [[int(t), *[int(o) for o in row if o != t][:4]] for t, row in zip(top1, others, strict=True)]
    gt_boxes = [[[4.0, 4.0, 28.0, 28.0]] for _ in range(num_images)]
    pred = [[4.0, 4.0, 4.0 + 24 * v, 28.0] for v in iou]
    rows = {
        "image_id": [f"img_{i:06d}" for i in range(num_images)],
        "image_path": [f"images/{i:06d}.png" for i in range(num_images)],
        "gt_class": gt_class.astype(int), "gt_boxes": gt_boxes,
        "width": np.full(num_images, SIDE), "height": np.full(num_images, SIDE),
        "top5_classes": [row[: min(5, num_classes)] for row in top5],
        "top5_scores": [list(map(float, s[: min(5, num_classes)])) for s in scores],
        "pred_box": pred, "gt_known_box": pred, "iou": iou, "iog": iou, "iop": iou, "gt_known_iou": gt_known_iou,
        "error_type": error, "correct_cls": correct, "top1_loc": correct & located,
        "top5_loc": located, "gt_known": gt_known_iou >= 0.5,
    }
    frame = pd.DataFrame(rows)
    for variant, shift in (("tscam", 0.0), ("trans_attention", -0.2), ("trans_cam", -0.3)):
        frame[f"gt_known_{variant}"] = gt_known_iou + shift >= 0.5
    for k in range(1, depth + 1):
        frame[f"gt_known_layers_{k}"] = gt_known_iou - 0.1 * (depth - k) >= 0.5
    frame["thumbnail"] = None
    return frame


def synthetic_summary(name: str, rows: pd.DataFrame, class_names: list[str], depth: int,
                      checkpoint: str = "checkpoints/none.safetensors", dataset: str = "data/none") -> dict:
    """The summary of ``rows``: every metric recomputed from the table itself."""
    fraction = lambda column: float(rows[column].mean())  # noqa: E731
    thresholds = [0.3, 0.5, 0.7, 0.9]
    per_class = rows.groupby("gt_class")
    present = [c for c in range(len(class_names)) if c in per_class.groups]
    return {
        "name": name,
        "checkpoint": {"source": checkpoint, "sha256": "0" * 64, "arch": "vit_tiny_patch16_224",
                       "num_classes": len(class_names), "class_names": class_names},
        "dataset": {"path": dataset, "kind": "synthetic", "split": "test", "num_images": len(rows)},
        "settings": {"cam_threshold": 0.1, "layers": None, "variant": "tscam", "iou_threshold": 0.5},
        "metrics": {
            "top1_cls": fraction("correct_cls"), "top5_cls": 1.0, "top1_loc": fraction("top1_loc"),
            "top5_loc": fraction("top5_loc"), "gt_known_loc": fraction("gt_known"),
            "error_analysis": {k: float((rows["error_type"] == k).mean()) for k in ERROR_TYPES[1:]},
            "maxboxacc_v2": {"iou_30": float((rows["gt_known_iou"] >= 0.3).mean()),
                             "iou_50": fraction("gt_known"), "iou_70": float((rows["gt_known_iou"] >= 0.7).mean()),
                             "mean": float(np.mean([(rows["gt_known_iou"] >= t).mean() for t in (0.3, 0.5, 0.7)])),
                             "best_cam_threshold": {"iou_30": 0.1, "iou_50": 0.1, "iou_70": 0.1}},
            "pxap": None,
            "loc_vs_iou": {"iou_thresholds": thresholds,
                           "gt_known": [float((rows["gt_known_iou"] >= t).mean()) for t in thresholds],
                           "top1": [float(((rows["iou"] >= t) & rows["correct_cls"]).mean()) for t in thresholds]},
            "loc_vs_cam_threshold": {"cam_thresholds": [0.1, 0.2], "gt_known": [fraction("gt_known")] * 2,
                                     "top1": [fraction("top1_loc")] * 2},
            "layer_count": {"counts": list(range(1, depth + 1)),
                            "gt_known": [fraction(f"gt_known_layers_{k}") for k in range(1, depth + 1)],
                            "top1": [float((rows[f"gt_known_layers_{k}"] & rows["correct_cls"]).mean())
                                     for k in range(1, depth + 1)]},
            "variants": {v: {"gt_known_loc": fraction(f"gt_known_{v}")}
                         for v in ("tscam", "trans_attention", "trans_cam")},
            "per_class": {"class_names": [class_names[c] for c in present],
                          "gt_known": [float(per_class.get_group(c)["gt_known"].mean()) for c in present],
                          "top1_cls": [float(per_class.get_group(c)["correct_cls"].mean()) for c in present],
                          "count": [int(len(per_class.get_group(c))) for c in present]},
        },
        "versions": {"tscam": "synthetic"}, "wall_time_s": 1.0, "images_per_second": float(len(rows)),
        "created": "2026-01-01T00:00:00+00:00",
    }


def write_synthetic(path: str | Path, num_images: int, class_names: list[str], depth: int = 2, seed: int = 0,
                    checkpoint: str = "checkpoints/none.safetensors", dataset: Path | None = None,
                    thumbnails: int = 0) -> Results:
    """Write a synthetic run; with ``dataset`` also its images there, and ``thumbnails`` of them drawn."""
    path = Path(path)
    rows = synthetic_rows(num_images, len(class_names), depth, seed)
    if dataset is not None:
        rng = np.random.default_rng(seed)
        for relative in rows["image_path"]:
            (dataset / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(dataset / relative)
        (path / "thumbnails").mkdir(parents=True, exist_ok=True)
        for index in range(thumbnails):
            row = rows.iloc[index]
            picture = overlay(Image.open(dataset / row["image_path"]), None,
                              [DrawnBox(row["gt_boxes"][0], GT_COLOR), DrawnBox(row["pred_box"], PRED_COLOR)])
            picture.save(path / "thumbnails" / f"{row['image_id']}.png")
            rows.loc[index, "thumbnail"] = f"{row['image_id']}.png"
    summary = synthetic_summary(path.name, rows, class_names, depth, checkpoint, str(dataset or "data/none"))
    return write_results(path, summary, rows)
