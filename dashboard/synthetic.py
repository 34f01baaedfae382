"""A synthetic results folder of any size, written through ``write_results``: for the dashboard's tests
and its load-time measurement. Made-up per-image records go through the evaluation's own accumulators
(``tscam_core.evaluate.summary``), so the summary and the table agree as in a real run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tscam_core.evaluate.scoring import ImageRecord, make_record
from tscam_core.evaluate.settings import EvalSettings
from tscam_core.evaluate.summary import Accumulators, ImageInfo, layer_name, run_summary
from tscam_core.metrics import cam_thresholds
from tscam_core.overlaps import Overlap
from tscam_core.overlay import GT_COLOR, PRED_COLOR, DrawnBox, overlay
from tscam_core.results import Results, write_results
from tscam_core.transforms import Preprocess

SIDE = 32


#: The synthetic runs' CAM-threshold sweep (MaxBoxAccV2) and curve, coarse: the values are made up anyway.
SWEEP = cam_thresholds(0.1)
CURVE = np.array([0.1, 0.2])
#: How much worse than the main map each other variant localizes, in GT-known IoU.
VARIANT_SHIFTS = {"tscam": 0.0, "trans_attention": -0.2, "trans_cam": -0.3}


def synthetic_records(num_images: int, num_classes: int, depth: int, seed: int = 0,
                      ) -> list[tuple[ImageRecord, ImageInfo]]:
    """Per-image records of made-up but internally consistent values, as the scorer would return them."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(num_images):
        gt_class = int(rng.integers(num_classes))
        top1 = gt_class if rng.random() < 0.7 else int((gt_class + rng.integers(1, max(2, num_classes))) % num_classes)
        others = [int(c) for c in rng.permutation(num_classes) if c != top1]
        scores = np.sort(rng.dirichlet(np.ones(num_classes)))[::-1][:5]
        iou = float(rng.random())
        gt_known_iou = float(np.clip(iou + rng.normal(0.05, 0.1), 0, 1))
        overlap = Overlap(iou, float(rng.random()), float(rng.random()), int(rng.integers(1, 3)))
        box = np.array([4.0, 4.0, 4.0 + 24 * iou, 28.0])
        named = {name: gt_known_iou + shift for name, shift in VARIANT_SHIFTS.items()}
        named.update({layer_name(k): gt_known_iou - 0.1 * (depth - k) for k in range(1, depth + 1)})
        record = make_record(gt_class, [top1, *others][:5], 0.5, overlap, gt_known_iou, box, box,
                             np.clip(gt_known_iou + rng.normal(0, 0.05, len(SWEEP)), 0, 1), np.full(len(CURVE), gt_known_iou),
                             None, named)
        info = ImageInfo(f"img_{i:06d}", f"images/{i:06d}.png", np.array([[4.0, 4.0, 28.0, 28.0]]), (SIDE, SIDE),
                         [float(v) for v in scores[: min(5, num_classes)]])
        records.append((record, info))
    return records


def synthetic_run(name: str, records: list[tuple[ImageRecord, ImageInfo]], class_names: list[str], depth: int,
                  checkpoint: str = "checkpoints/none.safetensors", dataset: str = "data/none") -> tuple[dict, list[dict]]:
    """summary.json's contents and the table's rows, from ``records`` fed to the evaluation's own accumulators."""
    totals = Accumulators(len(class_names), depth, Preprocess((SIDE, SIDE), (SIDE, SIDE)), SWEEP, CURVE)
    rows = [totals.add(record, info) for record, info in records]
    identity = {"source": checkpoint, "sha256": "0" * 64, "arch": "vit_tiny_patch16_224",
                "num_classes": len(class_names), "class_names": class_names, "depth": depth}
    summary = run_summary(name, identity, {"path": dataset, "kind": "synthetic", "split": "test",
                                           "num_images": len(rows)},
                          EvalSettings(pool="thread", threads=1).record(), totals.metrics(class_names), len(rows),
                          1.0, "cpu")
    return summary, rows


def write_synthetic(path: str | Path, num_images: int, class_names: list[str], depth: int = 2, seed: int = 0,
                    checkpoint: str = "checkpoints/none.safetensors", dataset: Path | None = None,
                    thumbnails: int = 0) -> Results:
    """Write a synthetic run; with ``dataset`` also its images there, and ``thumbnails`` of them drawn."""
    path = Path(path)
    summary, rows = synthetic_run(path.name, synthetic_records(num_images, len(class_names), depth, seed),
                                  class_names, depth, checkpoint, str(dataset or "data/none"))
    if dataset is not None:
        rng = np.random.default_rng(seed)
        for relative in (row["image_path"] for row in rows):
            (dataset / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(dataset / relative)
        (path / "thumbnails").mkdir(parents=True, exist_ok=True)
        for index in range(thumbnails):
            row = rows[index]
            picture = overlay(Image.open(dataset / row["image_path"]), None,
                              [DrawnBox(row["gt_boxes"][0], GT_COLOR), DrawnBox(row["pred_box"], PRED_COLOR)])
            picture.save(path / "thumbnails" / f"{row['image_id']}.png")
            row["thumbnail"] = f"{row['image_id']}.png"
    return write_results(path, summary, rows)
