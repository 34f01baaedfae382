"""Every metric on hand-made cases; each expected value is worked out in the comment next to it."""

from __future__ import annotations

import numpy as np
import pytest

from tscam_core.boxes import box_from_map, boxes_from_map, contour_sweep, upsample_map
from tscam_core.metrics import (
    Hits,
    LocalizationAccumulator,
    MaxBoxAccV2,
    Overlap,
    PxAP,
    Tally,
    ThresholdCurve,
    best_box_ious,
    box_iog,
    box_iop,
    box_iou,
    cam_thresholds,
    error_type,
    grouped_max_ious,
    hits,
    largest_box_ious,
    score_histograms,
    sweep_best_ious,
    sweep_largest_ious,
    sweeps_best_ious,
)

BOX = np.array([0, 0, 10, 10], np.float32)
GTS = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 5, 10]], np.float32)


def test_overlaps_against_several_gt_boxes():
    # Intersections with BOX (area 100): 100, 5x5=25, 0, 5x10=50. GT areas: 100, 100, 100, 50.
    np.testing.assert_allclose(box_iou(BOX, GTS), [1.0, 25 / 175, 0.0, 50 / 100])
    np.testing.assert_allclose(box_iog(BOX, GTS), [1.0, 25 / 100, 0.0, 50 / 50])
    np.testing.assert_allclose(box_iop(BOX, GTS), [1.0, 25 / 100, 0.0, 50 / 100])


def test_half_open_boxes_sharing_an_edge_do_not_overlap():
    # Columns 0..9 and 10..19: no pixel in common.
    assert box_iou(BOX, [[10, 0, 20, 10]])[0] == 0.0
    # One shared column (9): 1 x 10 = 10 over a union of 190.
    assert box_iou(BOX, [[9, 0, 19, 10]])[0] == pytest.approx(10 / 190)


def test_empty_boxes_and_no_gt_give_zero_not_nan():
    empty = np.array([3, 3, 3, 3])
    assert box_iou(empty, GTS).tolist() == [0.0] * 4
    assert box_iop(empty, GTS).tolist() == [0.0] * 4
    assert box_iog(BOX, [[4, 4, 4, 9]]).tolist() == [0.0]
    assert Overlap.of(BOX, np.zeros((0, 4))) == Overlap(0.0, 0.0, 0.0, 0)


def test_overlap_takes_maxima_and_counts_touched_gt_boxes():
    overlap = Overlap.of(BOX, GTS)
    # IoG > 0.3 for GT 0 (1.0) and GT 3 (1.0); GT 1 has 0.25.
    assert overlap == Overlap(iou=1.0, iog=1.0, iop=1.0, touched=2)
    # Off the diagonal: [2, 3, 12, 9] (area 60) meets GT 1 in 7x4 = 28 and GT 3 in 3x6 = 18.
    box = np.array([2, 3, 12, 9])
    assert Overlap.of(box, GTS) == Overlap(float(box_iou(box, GTS).max()), float(box_iog(box, GTS).max()),
                                           float(box_iop(box, GTS).max()), 2)
    assert Overlap.of(box, GTS).iop == 0.8  # GT 0 holds 48 of the 60 pixels


def test_grouped_ious_equal_each_image_alone():
    """Boxes of several images against their own GT lists (of 3, 0 and 1 boxes) in one step."""
    gts = [GTS[:3], np.zeros((0, 4)), np.array([[0, 0, 4, 4]])]
    boxes = np.array([[0, 0, 10, 10], [9, 0, 19, 10], [3, 3, 3, 3], [0, 0, 10, 10], [0, 0, 8, 8], [2, 2, 6, 6]])
    groups = np.array([0, 0, 0, 1, 2, 2])
    expected = [float(box_iou(box, gts[g]).max()) if len(gts[g]) else 0.0 for box, g in zip(boxes, groups, strict=True)]
    assert grouped_max_ious(boxes, groups, gts).tolist() == expected
    # Worked out: 1.0; [9, 0, 19, 10] meets GT 1 ([5, 5, 15, 15]) in 6x5 = 30 of 170; empty box 0; no GT 0;
    # [0, 0, 8, 8] holds the 4x4 GT: 16/64; [2, 2, 6, 6] meets it in 2x2 = 4 of 28.
    assert expected == [1.0, 30 / 170, 0.0, 0.0, 16 / 64, 4 / 28]
    assert grouped_max_ious(np.zeros((0, 4)), np.zeros(0, int), gts).shape == (0,)


@pytest.mark.parametrize(
    ("box", "gts", "correct_cls", "expected"),
    [
        # Perfect box, wrong class: a classification error whatever the box.
        ([0, 0, 10, 10], [[0, 0, 10, 10]], False, "cls"),
        # IoU exactly 0.5 (50 / 100) is correct: the criterion is IoU >= 0.5.
        ([0, 0, 10, 10], [[0, 0, 5, 10]], True, "correct"),
        # Box over two 8-wide instances: IoU 80/200 = 0.4 with each, IoG 1 with both -> M-Ins
        # (also IoG_m = 1 > 0.7, so M-Ins is tested before More).
        ([0, 0, 20, 10], [[0, 0, 8, 10], [12, 0, 20, 10]], True, "m_ins"),
        # Box on the top third of a tall object: IoU 100/300, IoP 1 -> Part.
        ([0, 0, 10, 10], [[0, 0, 10, 30]], True, "part"),
        # IoU 100/230 = 0.43, IoP 100/190 = 0.53 > 0.5 and IoG 100/140 = 0.71 > 0.7: Part comes first.
        ([0, 0, 19, 10], [[9, 0, 19, 14]], True, "part"),
        # Box 30x30 around a 10x10 object: IoU 100/900, IoP 0.11, IoG 1 -> More.
        ([0, 0, 30, 30], [[10, 10, 20, 20]], True, "more"),
        # A corner of 2x2 = 4: IoU, IoP, IoG all tiny -> OT.
        ([0, 0, 10, 10], [[8, 8, 28, 28]], True, "ot"),
        # Two instances but only one with IoG > 0.3 (the second has 10/100): not M-Ins; IoP 1 -> Part.
        ([0, 0, 10, 10], [[0, 0, 10, 30], [9, 0, 19, 10]], True, "part"),
    ],
)
def test_algorithm_1_every_branch(box, gts, correct_cls, expected):
    assert error_type(correct_cls, Overlap.of(np.array(box), np.array(gts))) == expected


def test_hits_follow_the_official_protocol():
    ranked = [3, 1, 2, 0, 4]
    # GT class 1 is ranked second: Top-5 only; its box has IoU 0.6.
    assert hits(ranked, 1, 0.6) == Hits(top1_cls=False, top5_cls=True, top1_loc=False, top5_loc=True, gt_known=True)
    # GT class 3 is first but its box misses: classification right, localization wrong.
    verdict = hits(ranked, 3, 0.4)
    assert (verdict.top1_cls, verdict.top1_loc, verdict.top5_loc, verdict.gt_known) == (True, False, False, False)
    # GT class 7 is not in the top 5: GT-known can still hold.
    verdict = hits(ranked, 7, 0.9)
    assert (verdict.top5_cls, verdict.top5_loc, verdict.gt_known) == (False, False, True)


def test_localization_accumulator_fractions_and_error_analysis():
    acc = LocalizationAccumulator(num_classes=3, curve_ious=(0.3, 0.5, 0.7))
    perfect = Overlap(1.0, 1.0, 1.0, 1)
    acc.add(0, [0, 1, 2], perfect, 1.0)  # correct
    acc.add(1, [1, 0, 2], Overlap(0.33, 0.33, 1.0, 1), 0.33)  # part
    acc.add(1, [2, 1, 0], perfect, 0.6)  # cls (top-5 loc right, GT-known right)
    acc.add(2, [2, 0, 1], Overlap(0.1, 1.0, 0.1, 1), 0.1)  # more
    result = acc.result()
    assert result["top1_cls"] == 3 / 4 and result["top5_cls"] == 1.0
    assert result["top1_loc"] == 1 / 4 and result["top5_loc"] == 2 / 4 and result["gt_known_loc"] == 2 / 4
    assert result["error_analysis"] == {"cls": 0.25, "m_ins": 0.0, "part": 0.25, "more": 0.25, "ot": 0.0}
    # GT-known IoUs 1.0, 0.33, 0.6, 0.1 against 0.3 / 0.5 / 0.7; Top-1 also needs the right class (not image 3).
    assert result["loc_vs_iou"]["gt_known"] == [3 / 4, 2 / 4, 1 / 4]
    assert result["loc_vs_iou"]["top1"] == [2 / 4, 1 / 4, 1 / 4]
    assert result["per_class"] == {"gt_known": [1.0, 0.5, 0.0], "top1_cls": [1.0, 0.5, 1.0], "count": [1, 2, 1]}
    # A class no image belongs to has nothing measured: null, not an accuracy of 0.
    fewer = LocalizationAccumulator(num_classes=3)
    fewer.add(0, [0, 1, 2], perfect, 1.0)
    assert fewer.result()["per_class"] == {"gt_known": [1.0, None, None], "top1_cls": [1.0, None, None],
                                           "count": [1, 0, 0]}


def test_tally_counts_per_name():
    tally = Tally()
    for value in (True, False, True):
        tally.add("tscam", value)
    assert tally.fraction("tscam") == pytest.approx(2 / 3)
    assert tally.fraction("never seen") is None


def two_blobs() -> np.ndarray:
    """20 x 20: a bright 4x4 blob (value 1) and a dim 8x8 blob (value 0.5)."""
    cam = np.zeros((20, 20), np.float32)
    cam[2:6, 2:6] = 1.0
    cam[10:18, 10:18] = 0.5
    return cam


def test_cam_threshold_sweep_largest_versus_all_contours():
    # Threshold 0 keeps both blobs (gray 255 and 127 > 0): the largest contour is the dim 8x8 one.
    # Threshold 0.6 cuts at int(0.6 * 255) = 153: only the bright blob survives.
    small_gt = np.array([[2, 2, 6, 6]])
    np.testing.assert_allclose(largest_box_ious(two_blobs(), small_gt, [0.0, 0.6]), [0.0, 1.0])
    # MaxBoxAccV2 looks at every contour: the small blob's box is there at both thresholds.
    np.testing.assert_allclose(best_box_ious(two_blobs(), small_gt, [0.0, 0.6]), [1.0, 1.0])
    big_gt = np.array([[10, 10, 18, 18]])
    np.testing.assert_allclose(largest_box_ious(two_blobs(), big_gt, [0.0, 0.6]), [1.0, 0.0])
    np.testing.assert_allclose(best_box_ious(two_blobs(), big_gt, [0.0, 0.6]), [1.0, 0.0])


def test_empty_map_gives_the_official_fallback_box_and_no_contours():
    empty = np.zeros((20, 20), np.float32)
    gt = np.array([[0, 0, 2, 2]])
    # The official fallback box [0, 0, 1, 1] covers 1 of the GT's 4 pixels.
    np.testing.assert_allclose(largest_box_ious(empty, gt, [0.1]), [0.25])
    np.testing.assert_allclose(best_box_ious(empty, gt, [0.1]), [0.0])


def test_blob_touching_the_border_gives_a_box_to_the_edge():
    cam = np.zeros((20, 20), np.float32)
    cam[0:5, 15:20] = 1.0  # rows 0..4, columns 15..19: the top-right corner
    gt = np.array([[15, 0, 20, 5]])
    np.testing.assert_allclose(largest_box_ious(cam, gt, [0.5]), [1.0])
    np.testing.assert_allclose(best_box_ious(cam, gt, [0.5]), [1.0])


def test_a_hole_border_is_a_contour_of_maxboxacc_v2_but_never_the_official_box():
    cam = np.zeros((40, 40), np.float32)
    cam[5:35, 5:35] = 1.0
    cam[10:30, 10:30] = 0.0  # a ring whose hole (rows and columns 10..29) is the object
    gt = np.array([[10, 10, 30, 30]])
    # The hole's contour runs through the ring pixels next to it: box [9, 9, 31, 31], IoU 400 / 484.
    np.testing.assert_allclose(best_box_ious(cam, gt, [0.5]), [400 / 484])
    # The official box is the ring's outer one, [5, 5, 35, 35]: IoU 400 / 900.
    np.testing.assert_allclose(largest_box_ious(cam, gt, [0.5]), [400 / 900])


def test_maxboxacc_v2_picks_the_best_threshold_per_iou():
    acc = MaxBoxAccV2([0.0, 0.5])
    for ious in ([0.8, 0.2], [0.4, 0.6], [0.45, 0.6], [0.1, 0.55]):
        acc.add(np.array(ious))
    result = acc.result()
    # IoU 0.3: 3/4 at both thresholds (tie -> the lower one). IoU 0.5: 1/4 at 0, 3/4 at 0.5.
    # IoU 0.7: 1/4 at 0, 0 at 0.5.
    assert result["iou_30"] == 0.75 and result["iou_50"] == 0.75 and result["iou_70"] == 0.25
    assert result["mean"] == pytest.approx((0.75 + 0.75 + 0.25) / 3)
    assert result["best_cam_threshold"] == {"iou_30": 0.0, "iou_50": 0.5, "iou_70": 0.0}


def test_maxboxacc_v2_from_maps():
    acc = MaxBoxAccV2([0.0, 0.6])
    acc.add(best_box_ious(two_blobs(), np.array([[10, 10, 18, 18]]), acc.thresholds))  # [1, 0]
    acc.add(best_box_ious(two_blobs(), np.array([[2, 2, 6, 8]]), acc.thresholds))  # 16/24 at both
    result = acc.result()
    # IoU 0.3 and 0.5: both images at threshold 0. IoU 0.7: only the first (16/24 = 0.67 < 0.7).
    assert (result["iou_30"], result["iou_50"], result["iou_70"]) == (1.0, 1.0, 0.5)


def test_threshold_curve_needs_the_right_class_for_top1():
    curve = ThresholdCurve([0.0, 0.6])
    curve.add(np.array([1.0, 0.0]), correct_cls=True)
    curve.add(np.array([0.0, 1.0]), correct_cls=False)
    assert curve.result() == {"cam_thresholds": [0.0, 0.6], "gt_known": [0.5, 0.5], "top1": [0.5, 0.0]}


def test_cam_thresholds_match_choe_et_al():
    sweep = cam_thresholds(0.01)
    assert len(sweep) == 100 and sweep[0] == 0.0 and sweep[-1] == pytest.approx(0.99)
    assert cam_thresholds(0.25).tolist() == [0.0, 0.25, 0.5, 0.75]
    with pytest.raises(ValueError, match="interval"):
        cam_thresholds(0.0)


def test_pxap_worked_example():
    # Scores 0.9 (object), 0.7 (background), 0.5 (object), 0.1 (background), thresholds high to low:
    # at 0.9 precision 1, recall 1/2; at 0.7 precision 1/2, no recall gain; at 0.5 precision 2/3, recall 1.
    # AP = 1 x 1/2 + 2/3 x 1/2.
    cam = np.array([[0.9, 0.7, 0.5, 0.1]], np.float32)
    mask = np.array([[1, 0, 1, 0]], bool)
    pxap = PxAP(bins=10)
    pxap.add(*score_histograms(cam, mask, cam_thresholds(0.1)))
    assert pxap.result() == pytest.approx(0.5 + 1 / 3)
    # Ignoring the background pixel at 0.7 leaves a perfect ranking.
    ignoring = PxAP(bins=10)
    ignoring.add(*score_histograms(cam, mask, cam_thresholds(0.1), ignore=np.array([[0, 1, 0, 0]], bool)))
    assert ignoring.result() == pytest.approx(1.0)


def test_score_bins_are_the_reference_codes_np_histogram():
    """Choe et al. bin with np.histogram over np.arange(0, 1, 0.01) followed by 1, 2, 3; float32 scores
    just under an edge (0.29 as float32 is 0.28999999...) stay in the bin below it."""
    rng = np.random.default_rng(5)
    edges = np.append(np.arange(0, 1, 0.01), [1.0, 2.0, 3.0])
    near = np.concatenate([np.arange(100) / 100, np.nextafter(np.arange(1, 100) / 100, 0)]).astype(np.float32)
    cam = np.concatenate([near, rng.random(3000).astype(np.float32), [1.0, 0.0]]).astype(np.float32)
    mask = rng.random(cam.size) > 0.5
    positive, negative = score_histograms(cam, mask)
    np.testing.assert_array_equal(positive, np.histogram(cam[mask], bins=edges)[0][:101])
    np.testing.assert_array_equal(negative, np.histogram(cam[~mask], bins=edges)[0][:101])
    assert score_histograms(np.array([np.float32(0.29)]), np.array([True]))[0][28] == 1


def test_score_bins_equal_a_sorted_search_for_any_thresholds():
    """Uneven and coarse thresholds (the first guess of a bin is then wrong), scores outside 0..1
    and on the edges, float64 maps, and the pixels left out by ``ignore``."""
    rng = np.random.default_rng(6)
    for trial in range(20):
        cuts = np.sort(np.concatenate([[0.0], rng.random(int(rng.integers(1, 40))) ** (trial % 3 + 1)]))
        cam = np.concatenate([rng.uniform(-0.5, 1.5, 500), cuts, np.nextafter(cuts, -1), [1.0]])
        cam = cam.astype(np.float32 if trial % 2 else np.float64)
        mask, ignore = rng.random(cam.size) > 0.4, rng.random(cam.size) > 0.8
        index = np.searchsorted(np.append(cuts, 1.0), np.clip(cam, 0, 1).astype(np.float64), side="right") - 1
        positive, negative = score_histograms(cam, mask, cuts, ignore=ignore)
        np.testing.assert_array_equal(positive, np.bincount(index[mask & ~ignore], minlength=len(cuts) + 1))
        np.testing.assert_array_equal(negative, np.bincount(index[~mask & ~ignore], minlength=len(cuts) + 1))
    nan = score_histograms(np.array([np.nan, 0.5], np.float32), np.array([True, False]), [0.0, 0.5])
    assert nan[0].tolist() == [0, 0, 1] and nan[1].tolist() == [0, 1, 0]  # NaN sorts last, as in the search
    with pytest.raises(ValueError, match="start at 0"):
        score_histograms(np.zeros(3), np.ones(3, bool), [0.1, 0.5])


def test_pxap_streams_over_images_and_handles_constant_maps():
    cam = np.array([[0.9, 0.7, 0.5, 0.1]], np.float32)
    mask = np.array([[1, 0, 1, 0]], bool)
    split = PxAP(bins=10)
    split.add(*score_histograms(cam[:, :2], mask[:, :2], cam_thresholds(0.1)))
    split.add(*score_histograms(cam[:, 2:], mask[:, 2:], cam_thresholds(0.1)))
    assert split.result() == pytest.approx(0.5 + 1 / 3)
    # A flat map ranks nothing: one operating point, precision = object share = 3/8, recall 1.
    flat = PxAP()
    flat.add(*score_histograms(np.zeros((2, 4)), np.array([[1, 1, 1, 0], [0, 0, 0, 0]])))
    assert flat.result() == pytest.approx(3 / 8)
    # A map equal to the mask (scores exactly 1 and 0) is perfect.
    perfect = PxAP()
    perfect.add(*score_histograms(mask.astype(np.float32), mask))
    assert perfect.result() == pytest.approx(1.0)
    assert PxAP().result() is None
    with pytest.raises(ValueError, match="differ in size"):
        score_histograms(cam, mask.T)


def test_pxap_equals_average_precision_from_its_definition():
    # Scores on the bin grid: AP = sum over distinct scores s (high to low) of precision(>= s) x recall gain.
    rng = np.random.default_rng(1)
    cam = rng.integers(0, 101, (30, 30)) / 100.0
    mask = rng.random((30, 30)) < cam  # brighter pixels are more often object
    pxap = PxAP(bins=100)
    pxap.add(*score_histograms(cam, mask))
    expected, previous_recall = 0.0, 0.0
    for score in np.unique(cam)[::-1]:
        kept = cam >= score
        recall = (kept & mask).sum() / mask.sum()
        expected += (kept & mask).sum() / kept.sum() * (recall - previous_recall)
        previous_recall = recall
    assert pxap.result() == pytest.approx(expected)


def test_sweeps_equal_the_box_by_box_computation_on_random_maps():
    """One contour sweep per map gives what boxes_from_map / box_from_map give threshold by threshold."""
    rng = np.random.default_rng(1)
    thresholds = cam_thresholds(0.01)
    for _ in range(12):
        cam = upsample_map(rng.random((8, 8)).astype(np.float32), (64, 64))
        corners = rng.integers(0, 48, (3, 2))
        gts = np.concatenate([corners, corners + rng.integers(4, 17, (3, 2))], axis=1)  # three GT boxes
        best = [max((box_iou(box, gts).max() for box in boxes_from_map(cam, float(t))), default=0.0)
                for t in thresholds]
        largest = [box_iou(box_from_map(cam, float(t)), gts).max() for t in thresholds]
        np.testing.assert_array_equal(best_box_ious(cam, gts, thresholds), best)
        np.testing.assert_array_equal(largest_box_ious(cam, gts, thresholds), largest)


def test_one_sweep_serves_thresholds_beyond_the_maxboxacc_grid():
    cam = two_blobs()
    gt = np.array([[2, 2, 6, 6]])
    # The grid [0, 0.6] plus an extra 0.7 (e.g. a curve threshold off the grid): only the bright blob survives 0.7.
    sweep = contour_sweep(cam, [0.0, 0.6, 0.7], largest_at=[0, 2])
    np.testing.assert_array_equal(sweep_best_ious(sweep, gt, 2), best_box_ious(cam, gt, [0.0, 0.6]))
    np.testing.assert_array_equal(sweep_largest_ious(sweep, gt, [0, 2]), [0.0, 1.0])
    np.testing.assert_array_equal(sweep_best_ious(contour_sweep(np.zeros((5, 5)), [0.0, 0.5]), gt, 2), [0.0, 0.0])


def test_sweeps_of_many_images_equal_each_image_alone():
    rng = np.random.default_rng(4)
    thresholds = cam_thresholds(0.05)
    cams = [upsample_map(rng.random((6, 6)).astype(np.float32), (40, 40)) for _ in range(4)]
    gts = [np.array([[2, 2, 20, 30]]), np.array([[0, 0, 40, 40], [5, 5, 9, 9]]), np.zeros((0, 4)),
           np.array([[10, 0, 40, 12]])]
    sweeps = [contour_sweep(cam, thresholds) for cam in cams]
    together = sweeps_best_ious(sweeps, gts, len(thresholds))
    for row, sweep, cam, gt in zip(together, sweeps, cams, gts, strict=True):
        np.testing.assert_array_equal(row, sweep_best_ious(sweep, gt, len(thresholds)))
        np.testing.assert_array_equal(row, best_box_ious(cam, gt, thresholds))
    assert not together[2].any() and together[1].max() > 0


def test_totals_of_disjoint_images_merge_into_the_totals_of_all():
    """Scoring workers each keep their own totals; merged, they are the one-accumulator result."""
    rng = np.random.default_rng(9)
    thresholds = cam_thresholds(0.1)

    def fresh() -> list:
        return [LocalizationAccumulator(4), MaxBoxAccV2(thresholds), PxAP(bins=len(thresholds)),
                ThresholdCurve(thresholds), Tally()]

    def feed(accumulators: list, image: int) -> None:
        local = np.random.default_rng(image)
        gt_class, top = int(local.integers(4)), [int(c) for c in local.permutation(4)]
        box = np.sort(local.integers(0, 20, 4)).astype(np.float32)  # x0 <= y0 <= x1 <= y1: a valid box
        accumulators[0].add(gt_class, top, Overlap.of(box, np.array([[2, 2, 15, 15]], np.float32)),
                            float(local.random()))
        accumulators[1].add(local.random(len(thresholds)))
        accumulators[2].add(*score_histograms(local.random((5, 5)), local.random((5, 5)) > 0.5, thresholds))
        accumulators[3].add(local.random(len(thresholds)), bool(local.integers(2)))
        accumulators[4].add(f"layers_{image % 3}", bool(local.integers(2)))

    whole, first, second = fresh(), fresh(), fresh()
    images = rng.permutation(30)
    for image in images:
        feed(whole, int(image))
    for image in images[:11]:
        feed(first, int(image))
    for image in images[11:]:
        feed(second, int(image))
    for one, other in zip(first, second, strict=True):
        one.merge(other)
    assert [a.result() if not isinstance(a, Tally) else (a.correct, a.total) for a in first] == \
        [a.result() if not isinstance(a, Tally) else (a.correct, a.total) for a in whole]
    with pytest.raises(ValueError, match="other settings"):
        MaxBoxAccV2(thresholds).merge(MaxBoxAccV2(cam_thresholds(0.05)))
    with pytest.raises(ValueError, match="other settings"):
        PxAP(bins=3).merge(MaxBoxAccV2(thresholds))
