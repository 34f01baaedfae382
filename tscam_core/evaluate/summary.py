"""summary.json and per_image.parquet written from the per-image records: running totals, table rows
and the run's identity. The readers' side (typed, checked) is ``tscam_core.summary``; the keys here
are its catalogues'."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from ..datasets.common import Skip
from ..explanation import variants_for
from ..files import file_sha256
from ..metrics import LocalizationAccumulator, MaxBoxAccV2, PxAP, Tally, ThresholdCurve
from ..summary import CRITERIA
from ..transforms import Preprocess
from .scoring import ImageRecord

#: summary.json's names of the ``CRITERIA`` in the layer-count curve and in each variant's entry.
CURVE_KEYS = {"top1": "top1_loc", "top5": "top5_loc", "gt_known": "gt_known"}
VARIANT_KEYS = {"top1_loc": "top1_loc", "top5_loc": "top5_loc", "gt_known_loc": "gt_known"}


def layer_name(count: int) -> str:
    """The name of TS-CAM's map over the first ``count`` blocks, in the table's columns and the tallies."""
    return f"layers_{count}"


@dataclass(frozen=True)
class ImageInfo:
    """What the table shows of an image beside its record: where it is and how it looked."""

    image_id: str
    image_path: str  # relative to the dataset
    gt_boxes: np.ndarray  # original frame, as annotated
    size: tuple[int, int]  # original (width, height)
    top_scores: list[float]
    thumbnail: str | None = None


class Accumulators:
    """Every running total of one evaluation; ``add`` also returns the image's table row."""

    def __init__(self, num_classes: int, depth: int, preprocess: Preprocess, sweep: np.ndarray, curve: np.ndarray,
                 iou_threshold: float = 0.5, views: bool = True) -> None:
        self.depth = depth
        self.views = views  # the variants and layer counts scored beside the main map (a view of the explanation)
        self.preprocess = preprocess
        self.localization = LocalizationAccumulator(num_classes, iou_threshold)
        self.maxboxacc = MaxBoxAccV2(sweep)
        self.pxap = PxAP(bins=len(sweep))
        self.threshold_curve = ThresholdCurve(curve, iou_threshold)
        self.tally = Tally()

    def add(self, record: ImageRecord, info: ImageInfo) -> dict:
        verdict, error = self.localization.add(record.gt_class, record.top_classes, record.top1, record.gt_known_iou)
        self.maxboxacc.add(record.best_ious)
        self.threshold_curve.add(record.curve_ious, verdict.top1_cls)
        if record.histograms is not None:
            self.pxap.add(*record.histograms)
        width, height = info.size
        row = {
            "image_id": info.image_id, "image_path": info.image_path, "gt_class": record.gt_class,
            "gt_boxes": np.asarray(info.gt_boxes, np.float32).reshape(-1, 4).tolist(),
            "width": width, "height": height, "top5_classes": record.top_classes, "top5_scores": info.top_scores,
            "pred_box": self._original(record.pred_box, info), "gt_known_box": self._original(record.gt_known_box, info),
            "iou": record.top1.iou, "iog": record.top1.iog, "iop": record.top1.iop, "gt_known_iou": record.gt_known_iou,
            "error_type": error, "correct_cls": verdict.top1_cls, "top1_loc": verdict.top1_loc,
            "top5_loc": verdict.top5_loc, "gt_known": verdict.gt_known,
        }
        for name, other in record.named_hits.items():
            row[f"gt_known_{name}"] = other.gt_known
            for criterion in CRITERIA:
                self.tally.add(f"{name}:{criterion}", getattr(other, criterion))
        row["thumbnail"] = info.thumbnail
        return row

    def merge(self, other: Accumulators) -> None:
        """Add the totals of other images (a pool job's) to these."""
        for name in ("localization", "maxboxacc", "pxap", "threshold_curve", "tally"):
            getattr(self, name).merge(getattr(other, name))

    def _original(self, box: np.ndarray, info: ImageInfo) -> list[float]:
        return self.preprocess.boxes_to_original(box, info.size)[0].tolist()

    def metrics(self, class_names: Sequence[str]) -> dict:
        metrics = self.localization.result()
        metrics["per_class"] = {"class_names": list(class_names), **metrics["per_class"]}
        metrics["maxboxacc_v2"] = self.maxboxacc.result()
        metrics["pxap"] = self.pxap.result()
        metrics["loc_vs_cam_threshold"] = self.threshold_curve.result()
        if not self.views:  # another method: no variant or layer count was scored, and the keys are absent
            return metrics
        fraction = self.tally.fraction
        counts = list(range(1, self.depth + 1))
        metrics["layer_count"] = {"counts": counts, **{
            key: [fraction(f"{layer_name(k)}:{criterion}") for k in counts] for key, criterion in CURVE_KEYS.items()}}
        metrics["variants"] = {name: {key: fraction(f"{name}:{criterion}") for key, criterion in VARIANT_KEYS.items()}
                               for name in variants_for(self.depth)}
        return metrics


def run_summary(name: str, checkpoint: dict, dataset: dict, settings: dict, metrics: dict, num_images: int,
                wall: float, device: str) -> dict:
    """summary.json's contents (docs/results-format.md), with this machine's versions and the time now;
    ``dataset`` holds ``num_images`` too."""
    return {
        "name": name, "checkpoint": checkpoint, "dataset": dataset,
        "settings": settings, "metrics": metrics, "versions": versions(), "wall_time_s": wall,
        "images_per_second": num_images / wall if wall > 0 else None, "device": device,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def checkpoint_identity(model: torch.nn.Module) -> dict:
    info = model.info
    source = Path(info.source) if info.source else None
    return {
        "source": info.source, "sha256": file_sha256(source) if source and source.is_file() else None,
        "arch": info.arch, "num_classes": info.num_classes, "class_names": list(info.class_names),
        "head_kind": info.head_kind, "depth": model.depth, "preprocess": info.preprocess, "family": info.family,
    }


def dataset_kind(root: Path, kind: str) -> str:
    if kind != "auto":
        return kind
    from ..datasets.cub import is_cub

    return "cub" if is_cub(Path(root)) else "ilsvrc"


def skip_records(skipped: Sequence[Skip], root: Path) -> list[dict]:
    """summary.json's list of what was left out: each file (relative to the dataset), line or null, reason."""
    return [{"file": relative(Path(file), Path(root)), "line": line, "reason": reason} for file, line, reason in skipped]


def relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def versions() -> dict:
    import timm

    from .. import __version__

    return {"tscam": __version__, "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
