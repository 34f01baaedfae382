"""A table row's CAM threshold: the one its map localizes best with on the val split, never on test.

An evaluation of the val split at any threshold records GT-known Loc at every CAM threshold of its
curve (``metrics.loc_vs_cam_threshold``); the row's test run is then made at the best of them, as
training chooses a checkpoint's threshold (``tscam_core.metrics.best_threshold``, ties to the
paper's 0.1).
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import PAPER_THRESHOLD
from ..datasets import open_dataset
from ..metrics import best_threshold
from ..results import Results

#: The split thresholds are chosen on.
VALIDATION_SPLIT = "val"


def validation_threshold(results: Results) -> float:
    """The CAM threshold of best GT-known Loc on ``results``, a run of the val split, rounded to 6 places
    (the curve stores ``np.arange``'s 0.15000000000000002; a command shows 0.15)."""
    split = results.parsed.dataset.split
    if split != VALIDATION_SPLIT:
        raise ValueError(f"{results.path}: a CAM threshold is chosen on the {VALIDATION_SPLIT!r} split only, this "
                         f"run is of split {split!r} (evaluate with --split {VALIDATION_SPLIT})")
    curve = results.metrics["loc_vs_cam_threshold"]
    return round(float(best_threshold(curve["cam_thresholds"], curve["gt_known"], PAPER_THRESHOLD)), 6)


def has_validation(dataset: str | Path, split: str) -> bool:
    """Whether ``dataset`` has a val split to choose thresholds on, apart from the evaluated ``split``.

    A val split that shares images with ``split`` (ILSVRC's "test" is its "val") is refused: choosing
    there would tune on the images the table reports.
    """
    validation = open_dataset(dataset, VALIDATION_SPLIT)
    if not len(validation) or split == VALIDATION_SPLIT:
        return False
    shared = {sample.path for sample in validation} & {sample.path for sample in open_dataset(dataset, split)}
    if shared:
        raise ValueError(f"{dataset}: the {VALIDATION_SPLIT!r} split shares {len(shared)} images with the evaluated "
                         f"split {split!r}, so a threshold chosen on it would be tuned on them; pass --threshold")
    return True
