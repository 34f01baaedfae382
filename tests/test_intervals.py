"""The bootstrap interval on cases whose answer can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tscam_core.intervals import Interval, bootstrap_interval, difference_interval


def test_a_constant_column_has_no_spread():
    # Every resample of ten hits is ten hits.
    assert bootstrap_interval([True] * 10) == Interval(1.0, 1.0, 1.0, 0.95)


def test_one_hit_in_four_matches_the_binomial_percentiles():
    # A resample's mean is Binomial(4, 1/4) / 4: P(0) = 0.316, P(1/4) = 0.422, P(1/2) = 0.211,
    # P(3/4) = 0.047, P(1) = 0.004. The 2.5th percentile is 0 (0.316 of the mass); the cumulative
    # mass reaches 0.949 at 1/2 and 0.996 at 3/4, so the 97.5th percentile is 3/4.
    interval = bootstrap_interval([0, 0, 0, 1], resamples=20000, seed=3)
    assert (interval.estimate, interval.low, interval.high) == (0.25, 0.0, 0.75)


def test_the_width_matches_the_normal_approximation():
    # 1,000 hits in 2,000 images: the mean's standard error is sqrt(0.25 / 2000) = 0.01118, so the
    # 95% interval is about 0.5 -+ 1.96 x 0.01118 = 0.4781 .. 0.5219.
    column = np.arange(2000) % 2 == 0
    interval = bootstrap_interval(column, resamples=4000)
    assert interval.low == pytest.approx(0.4781, abs=0.003)
    assert interval.high == pytest.approx(0.5219, abs=0.003)


def test_a_paired_difference_is_narrower_than_either_column():
    # Map B hits every image map A hits, and 100 more of 1,000: the difference column is 1 on those
    # 100 images and 0 elsewhere, so its interval is about 0.1 -+ 1.96 x sqrt(0.09 / 1000) = 0.081 .. 0.119,
    # narrower than each map's own (about -+ 0.031 at a mean near 0.5).
    a = np.arange(1000) < 450
    b = np.arange(1000) < 550
    paired = bootstrap_interval(b.astype(int) - a.astype(int))
    single = bootstrap_interval(b)
    assert paired.estimate == pytest.approx(0.1)
    assert paired.low > 0.075 and paired.high < 0.125
    assert paired.high - paired.low < single.high - single.low


def test_the_seed_fixes_the_interval_and_another_seed_moves_it():
    column = np.arange(300) % 3 == 0
    assert bootstrap_interval(column, seed=1) == bootstrap_interval(column, seed=1)
    assert bootstrap_interval(column, seed=1) != bootstrap_interval(column, seed=2)


def test_percent_prints_estimate_and_bounds():
    assert Interval(0.3615, 0.34, 0.3825, 0.95).percent() == "36.1 [34.0, 38.2]"
    assert Interval(-0.228, -0.262, -0.194, 0.95).percent() == "-22.8 [-26.2, -19.4]"


@pytest.mark.parametrize("values, level, message", [
    ([], 0.95, "non-empty column"),
    ([[1, 0], [0, 1]], 0.95, "one value per image"),
    ([1.0, float("nan")], 0.95, "NaN or infinite"),
    ([1, 0], 1.5, "level must be between 0 and 1"),
])
def test_bad_input_is_named(values, level, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_interval(values, level=level)


def test_an_unpaired_difference_of_constant_columns_has_no_spread():
    # Every resample of 30 hits minus every resample of 20 misses is 1 - 0.
    assert difference_interval([1] * 30, [0] * 20) == Interval(1.0, 1.0, 1.0, 0.95)


def test_an_unpaired_difference_matches_the_normal_approximation():
    # 1,000 hits of 2,000 images against 600 of 2,000 (other images): the difference 0.5 - 0.3 = 0.2 has
    # standard error sqrt(0.25 / 2000 + 0.21 / 2000) = 0.01517, so about 0.2 -+ 0.0297 = 0.1703 .. 0.2297.
    first, second = np.arange(2000) % 2 == 0, np.arange(2000) % 10 < 3
    interval = difference_interval(first, second, resamples=4000)
    assert interval.estimate == pytest.approx(0.2)
    assert interval.low == pytest.approx(0.1703, abs=0.004)
    assert interval.high == pytest.approx(0.2297, abs=0.004)


def test_an_unpaired_difference_is_wider_than_the_paired_one_of_the_same_columns():
    # The paired test of test_a_paired_difference_... (0.081 .. 0.119) forgets, unpaired, that the images are
    # shared: sqrt(0.2475 / 1000 + 0.2475 / 1000) = 0.0222, about 0.1 -+ 0.044.
    a, b = np.arange(1000) < 450, np.arange(1000) < 550
    unpaired, paired = difference_interval(b, a), bootstrap_interval(b.astype(int) - a.astype(int))
    assert unpaired.estimate == pytest.approx(paired.estimate)
    assert unpaired.high - unpaired.low > 1.5 * (paired.high - paired.low)


def test_an_unpaired_difference_names_a_bad_column():
    with pytest.raises(ValueError, match="non-empty column"):
        difference_interval([1, 0], [])
