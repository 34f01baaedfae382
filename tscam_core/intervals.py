"""Percentile-bootstrap intervals over images, for any per-image figure.

A benchmark of 2,000 images moves an accuracy by about two points from one draw of images to the
next, so a figure without its interval cannot say whether one map localizes better than another.
Every accuracy of this project is the mean of a per-image column (a hit is 1, a miss 0; see
``per_image.parquet``), so one function covers them all: resample the images with replacement,
take the mean each time, and read the interval off the percentiles. For "is map A better than map B
on the same images", pass the per-image difference ``hits_a - hits_b``: the paired interval, far
narrower than the two separate ones. Two columns of different images (another draw of the
benchmark) have no pairs: ``difference_interval`` resamples each on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

#: Resamples drawn per batch, so memory stays at a few megabytes whatever the number of images.
_BATCH = 250


@dataclass(frozen=True)
class Interval:
    """The column's mean over all images and its bootstrap interval at ``level``."""

    estimate: float
    low: float
    high: float
    level: float

    def percent(self, digits: int = 1) -> str:
        """As docs print it, in percent: ``36.1 [34.0, 38.2]`` (a dash would misread with negative bounds)."""
        return f"{100 * self.estimate:.{digits}f} [{100 * self.low:.{digits}f}, {100 * self.high:.{digits}f}]"


def bootstrap_interval(values: ArrayLike, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of the mean of ``values`` (one number per image; booleans count as 0/1).

    The same ``seed`` gives the same interval, so a regenerated document does not drift.
    """
    column = _column(values)
    _check(level, resamples)
    means = _resampled_means(column, resamples, np.random.default_rng(seed))
    return _percentiles(float(column.mean()), means, level)


def difference_interval(first: ArrayLike, second: ArrayLike, level: float = 0.95, resamples: int = 2000,
                        seed: int = 0) -> Interval:
    """Interval of mean(``first``) - mean(``second``) for columns of different images (no pairs): each
    column is resampled on its own, as two independent draws of a benchmark would be."""
    a, b = _column(first), _column(second)
    _check(level, resamples)
    rng = np.random.default_rng(seed)
    means = _resampled_means(a, resamples, rng) - _resampled_means(b, resamples, rng)
    return _percentiles(float(a.mean() - b.mean()), means, level)


def _column(values: ArrayLike) -> np.ndarray:
    column = np.asarray(values, dtype=np.float64)
    if column.ndim != 1 or column.size == 0:
        raise ValueError(f"need a non-empty column of one value per image, got shape {column.shape}")
    if not np.isfinite(column).all():
        raise ValueError("the per-image column holds NaN or infinite values")
    return column


def _check(level: float, resamples: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")


def _resampled_means(column: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    means = np.empty(resamples)
    for start in range(0, resamples, _BATCH):
        count = min(_BATCH, resamples - start)
        means[start:start + count] = column[rng.integers(0, column.size, (count, column.size))].mean(axis=1)
    return means


def _percentiles(estimate: float, means: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), level)


__all__ = ["Interval", "bootstrap_interval", "difference_interval"]
