"""Every metric on hand-made cases; each expected value is worked out in the comment next to it.

Boxes are counted inclusively, as both reference codes do: ``[x0, y0, x1, y1]`` spans
``x1 - x0 + 1`` columns, so ``[0, 0, 9, 9]`` is 10 x 10 = 100 pixels and ``[4, 4, 4, 4]`` one pixel.
"""

from __future__ import annotations

import numpy as np
import pytest

from tscam_core.boxes import box_from_map, boxes_from_map, contour_sweep, contour_sweeps, upsample_map
from tscam_core.metrics import (
    Hits,
    LocalizationAccumulator,
    MaxBoxAccV2,
    PxAP,
    Tally,
    ThresholdCurve,
    cam_thresholds,
    error_type,
    hits,
    score_histograms,
)
from tscam_core.overlaps import (
    Overlap,
    best_box_ious,
    box_iog,
    box_iop,
    box_iou,
    grouped_max_ious,
    largest_box_ious,
    maxboxacc_boxes,
    sweep_best_ious,
    sweep_largest_ious,
    sweeps_best_ious,
)

BOX = np.array([0, 0, 10, 10], np.float32)  # 11 x 11 = 121 pixels
GTS = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 5, 10]], np.float32)


def test_overlaps_against_several_gt_boxes():
    # GT areas 121, 121, 121, 6 x 11 = 66. Intersections with BOX: 121; columns and rows 5..10,
    # 6 x 6 = 36; none; 66 (GT 3 lies inside BOX).
    np.testing.assert_allclose(box_iou(BOX, GTS), [1.0, 36 / 206, 0.0, 66 / 121])
    np.testing.assert_allclose(box_iog(BOX, GTS), [1.0, 36 / 121, 0.0, 1.0])
    np.testing.assert_allclose(box_iop(BOX, GTS), [1.0, 36 / 121, 0.0, 66 / 121])


def test_boxes_sharing_an_edge_share_its_pixels_unless_half_open():
    # Inclusive (the default): both boxes hold column 10, 1 x 11 = 11 pixels of a union of 231.
    assert box_iou(BOX, [[10, 0, 20, 10]])[0] == pytest.approx(11 / 231)
    # Half-open: columns 0..9 and 10..19, nothing in common.
    assert box_iou(BOX, [[10, 0, 20, 10]], "half_open")[0] == 0.0
    # Columns 9..10 inclusive: 2 x 11 = 22 of 220. Half-open, column 9 alone: 1 x 10 = 10 of 190.
    assert box_iou(BOX, [[9, 0, 19, 10]])[0] == pytest.approx(22 / 220)
    assert box_iou(BOX, [[9, 0, 19, 10]], "half_open")[0] == pytest.approx(10 / 190)
    with pytest.raises(ValueError, match="box convention must be one of inclusive, half_open"):
        box_iou(BOX, GTS, "pixels")


def test_empty_boxes_and_no_gt_give_zero_not_nan():
    # [3, 3, 3, 3] is one pixel (inside GT 0 and GT 3); [3, 3, 2, 2] spans 0 columns: empty.
    np.testing.assert_allclose(box_iou([3, 3, 3, 3], GTS), [1 / 121, 0.0, 0.0, 1 / 66])
    empty = np.array([3, 3, 2, 2])
    assert box_iou(empty, GTS).tolist() == [0.0] * 4
    assert box_iop(empty, GTS).tolist() == [0.0] * 4
    assert box_iog(BOX, [[4, 4, 3, 9]]).tolist() == [0.0]
    assert box_iou([3, 3, 3, 3], GTS, "half_open").tolist() == [0.0] * 4  # empty when half-open
    assert Overlap.of(BOX, np.zeros((0, 4))) == Overlap(0.0, 0.0, 0.0, 0)


def test_overlap_reads_the_gt_box_of_highest_iou_and_counts_touched_gt_boxes():
    # IoU is highest with GT 0 (1.0): its IoG and IoP. IoG > 0.3 for GT 0 and GT 3; GT 1 has 36/121 = 0.298.
    assert Overlap.of(BOX, GTS) == Overlap(iou=1.0, iog=1.0, iop=1.0, touched=2)


def test_part_and_more_are_judged_on_the_box_of_highest_iou_not_the_highest_iog():
    # Box [0, 0, 9, 9] (100 pixels). Small GT [0, 0, 1, 1] (4 pixels, inside it): IoU 4/100, IoG 1.
    # Long GT [5, 0, 24, 9] (200 pixels) meets it in columns 5..9, 5 x 10 = 50: IoU 50/250 = 0.2, the
    # highest, with IoG 50/200 = 0.25 and IoP 50/100 = 0.5. Only the small GT has IoG > 0.3.
    box, gts = np.array([0, 0, 9, 9]), np.array([[0, 0, 1, 1], [5, 0, 24, 9]])
    overlap = Overlap.of(box, gts)
    assert overlap == Overlap(iou=0.2, iog=0.25, iop=0.5, touched=1)
    # On the long GT: IoP 0.5 is not above 0.5 (no Part), IoG 0.25 < 0.7 (no More): OT. Maxima over
    # both GT boxes would have said More (IoG 1 on the small one).
    assert error_type(True, overlap) == "ot"
    # Ties in IoU: the first GT box, as the reference's strict ``>`` scan keeps it. Two copies of the
    # long GT and a box equal to neither: both give IoU 0.2, the first one's numbers are read.
    assert Overlap.of(box, gts[[1, 1]]) == Overlap(iou=0.2, iog=0.25, iop=0.5, touched=0)


def test_grouped_ious_equal_each_image_alone():
    """Boxes of several images against their own GT lists (of 3, 0 and 1 boxes) in one step."""
    gts = [GTS[:3], np.zeros((0, 4)), np.array([[0, 0, 4, 4]])]
    boxes = np.array([[0, 0, 10, 10], [9, 0, 19, 10], [3, 3, 2, 2], [0, 0, 10, 10], [0, 0, 8, 8], [2, 2, 6, 6],
                      [0, 0, 0, 0]])
    groups = np.array([0, 0, 0, 1, 2, 2, 2])
    expected = [float(box_iou(box, gts[g]).max()) if len(gts[g]) else 0.0 for box, g in zip(boxes, groups, strict=True)]
    assert grouped_max_ious(boxes, groups, gts).tolist() == expected
    # Worked out: 1.0; [9, 0, 19, 10] (121) meets GT 1 ([5, 5, 15, 15]) in 7 x 6 = 42, IoU 42/200 (GT 0:
    # 22/220); the empty box 0; no GT: 0; [0, 0, 8, 8] (81) holds the 25-pixel GT: 25/81; [2, 2, 6, 6]
    # (25) meets it in 3 x 3 = 9 of 41; the corner pixel [0, 0, 0, 0] is 1 of the GT's 25 (the
    # padding of the shorter GT lists, whatever it holds, counts for nothing).
    assert expected == [1.0, 42 / 200, 0.0, 0.0, 25 / 81, 9 / 41, 1 / 25]
    assert grouped_max_ious(np.zeros((0, 4)), np.zeros(0, int), gts).shape == (0,)
    assert grouped_max_ious(boxes[:2], groups[:2], gts, "half_open").tolist() == [1.0, 30 / 170]


@pytest.mark.parametrize(
    ("box", "gts", "correct_cls", "expected"),
    [
        # Perfect box, wrong class: a classification error whatever the box.
        ([0, 0, 9, 9], [[0, 0, 9, 9]], False, "cls"),
        # IoU exactly 0.5 (the GT's 50 pixels inside the box's 100) is not Top-1 Loc (IoU > 0.5 needed);
        # IoP 50/100 = 0.5 is not above 0.5, IoG 1 >= 0.7: More.
        ([0, 0, 9, 9], [[0, 0, 9, 4]], True, "more"),
        # One row more: 60/100 > 0.5, correct.
        ([0, 0, 9, 9], [[0, 0, 9, 5]], True, "correct"),
        # Box [0, 0, 19, 9] (200) over two 8 x 10 instances: IoU 80/200 = 0.4 with each, IoG 1 with both ->
        # M-Ins (also IoG = 1 >= 0.7, so M-Ins is tested before More).
        ([0, 0, 19, 9], [[0, 0, 7, 9], [12, 0, 19, 9]], True, "m_ins"),
        # Box on the top third of a tall object (100 of 300): IoU 1/3, IoP 1 -> Part.
        ([0, 0, 9, 9], [[0, 0, 9, 29]], True, "part"),
        # Box 19 x 10 = 190, GT 10 x 14 = 140, shared 10 x 10 = 100: IoU 100/230 = 0.43,
        # IoP 100/190 = 0.53 > 0.5 and IoG 100/140 = 0.71 >= 0.7: Part comes first.
        ([0, 0, 18, 9], [[9, 0, 18, 13]], True, "part"),
        # Box 30 x 30 = 900 around a 10 x 10 object: IoU 100/900, IoP 0.11, IoG 1 -> More.
        ([0, 0, 29, 29], [[10, 10, 19, 19]], True, "more"),
        # IoG exactly 0.7: box 30 x 7 = 210 holds 10 x 7 = 70 of the GT's 100; IoP 70/210 = 1/3,
        # IoU 70/240 -> More (the official test is IoG >= 0.7).
        ([0, 0, 29, 6], [[0, 0, 9, 9]], True, "more"),
        # One row less, 10 x 6 = 60 of 100: IoG 0.6, IoP 60/180 -> OT.
        ([0, 0, 29, 5], [[0, 0, 9, 9]], True, "ot"),
        # A corner of 2 x 2 = 4 of a 400-pixel GT: IoU, IoP, IoG all tiny -> OT.
        ([0, 0, 9, 9], [[8, 8, 27, 27]], True, "ot"),
        # Two instances but only one with IoG > 0.3 (the second shares column 9, 10 of 100): not M-Ins;
        # on the first (IoU 100/300, the higher) IoP 1 -> Part.
        ([0, 0, 9, 9], [[0, 0, 9, 29], [9, 0, 18, 9]], True, "part"),
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


def test_iou_exactly_half_is_gt_known_but_neither_top1_nor_top5_loc():
    # Top-1 / Top-5 Loc need IoU > 0.5 (cls_loc_err), GT-known IoU >= 0.5 (evaluate_cls_loc).
    iou = float(box_iou([0, 0, 9, 9], [[0, 0, 9, 4]])[0])  # 50 of 100 pixels
    assert iou == 0.5
    assert hits([3, 1], 3, iou) == Hits(top1_cls=True, top5_cls=True, top1_loc=False, top5_loc=False, gt_known=True)
    acc = LocalizationAccumulator(num_classes=4, curve_ious=(0.5,))
    acc.add(3, [3, 1], Overlap.of(np.array([0, 0, 9, 9]), np.array([[0, 0, 9, 4]])), iou)
    result = acc.result()
    assert (result["top1_loc"], result["top5_loc"], result["gt_known_loc"]) == (0.0, 0.0, 1.0)
    assert result["loc_vs_iou"]["gt_known"] == [1.0] and result["loc_vs_iou"]["top1"] == [0.0]
    curve = ThresholdCurve([0.1])
    curve.add(np.array([iou]), correct_cls=True)
    assert curve.result()["gt_known"] == [1.0] and curve.result()["top1"] == [0.0]


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


def test_an_all_zero_map_scores_each_references_fallback_box():
    empty = np.zeros((20, 20), np.float32)
    gt = np.array([[0, 0, 2, 2]])  # 3 x 3 = 9 pixels
    # TS-CAM's fallback box [0, 0, 1, 1] is 2 x 2 = 4 pixels, all inside the GT: 4/9.
    np.testing.assert_allclose(largest_box_ious(empty, gt, [0.0, 0.1]), [4 / 9, 4 / 9])
    # No pixel survives any threshold (gray 0 > int(t x 0) nowhere): Choe et al.'s [0, 0, 0, 0],
    # one pixel, inside the GT: 1/9.
    np.testing.assert_allclose(best_box_ious(empty, gt, [0.0, 0.1]), [1 / 9, 1 / 9])
    # Half-open, [0, 0, 0, 0] is empty and [0, 0, 1, 1] one of the GT's 2 x 2 = 4 pixels.
    np.testing.assert_allclose(largest_box_ious(empty, gt, [0.1], "half_open"), [0.25])
    np.testing.assert_allclose(best_box_ious(empty, gt, [0.1], "half_open"), [0.0])


def test_a_one_pixel_gt_box():
    cam = np.zeros((20, 20), np.float32)
    cam[4, 4] = 1.0
    gt = np.array([[4, 4, 4, 4]])  # the pixel at column 4, row 4
    # The official box of the hot pixel is boundingRect's [4, 4, 5, 5]: 2 x 2 = 4 pixels counted
    # inclusively, one of them the GT's. Choe et al. clip only at the last column and row: the same.
    np.testing.assert_allclose(largest_box_ious(cam, gt, [0.5]), [0.25])
    np.testing.assert_allclose(best_box_ious(cam, gt, [0.5]), [0.25])
    # In the last column and row, Choe et al.'s clip makes the box [19, 19, 19, 19]: the GT exactly.
    corner = np.zeros((20, 20), np.float32)
    corner[19, 19] = 1.0
    np.testing.assert_allclose(largest_box_ious(corner, [[19, 19, 19, 19]], [0.5]), [0.25])
    np.testing.assert_allclose(best_box_ious(corner, [[19, 19, 19, 19]], [0.5]), [1.0])
    # An all-zero map: Choe et al.'s [0, 0, 0, 0] is a one-pixel GT in the corner, TS-CAM's
    # [0, 0, 1, 1] holds it in 4 pixels.
    np.testing.assert_allclose(best_box_ious(np.zeros((20, 20)), [[0, 0, 0, 0]], [0.5]), [1.0])
    np.testing.assert_allclose(largest_box_ious(np.zeros((20, 20)), [[0, 0, 0, 0]], [0.5]), [0.25])
    # Half-open, a GT [x, x, x, x] holds no pixel: IoU 0 whatever the box.
    np.testing.assert_allclose(largest_box_ious(cam, gt, [0.5], "half_open"), [0.0])


def test_blob_touching_the_border_gives_a_box_to_the_edge():
    cam = np.zeros((20, 20), np.float32)
    cam[0:5, 15:20] = 1.0  # rows 0..4, columns 15..19: the top-right corner
    gt = np.array([[15, 0, 20, 5]])  # 6 x 6 = 36 pixels counted inclusively
    # The official box is boundingRect's [15, 0, 20, 5], the GT exactly.
    np.testing.assert_allclose(largest_box_ious(cam, gt, [0.5]), [1.0])
    # Choe et al. clip x1 to the last column, 19: [15, 0, 19, 5], 5 x 6 = 30 of the GT's 36.
    np.testing.assert_allclose(best_box_ious(cam, gt, [0.5]), [30 / 36])
    np.testing.assert_array_equal(maxboxacc_boxes([[15, 0, 20, 5]], (20, 20)), [[15, 0, 19, 5]])
    # Half-open there is nothing to clip: x1 = 20 is the image's edge.
    np.testing.assert_allclose(best_box_ious(cam, gt, [0.5], "half_open"), [1.0])


def test_a_hole_border_is_a_contour_of_maxboxacc_v2_but_never_the_official_box():
    cam = np.zeros((40, 40), np.float32)
    cam[5:35, 5:35] = 1.0
    cam[10:30, 10:30] = 0.0  # a ring whose hole (rows and columns 10..29) is the object
    gt = np.array([[10, 10, 30, 30]])  # 21 x 21 = 441 pixels
    # The hole's contour runs through the ring pixels next to it: box [9, 9, 31, 31] (23 x 23), IoU 441 / 529.
    np.testing.assert_allclose(best_box_ious(cam, gt, [0.5]), [441 / 529])
    # The official box is the ring's outer one, [5, 5, 35, 35] (31 x 31): IoU 441 / 961.
    np.testing.assert_allclose(largest_box_ious(cam, gt, [0.5]), [441 / 961])


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
    acc.add(best_box_ious(two_blobs(), np.array([[2, 2, 6, 9]]), acc.thresholds))  # 25/40 at both
    result = acc.result()
    # The bright blob's box [2, 2, 6, 6] (5 x 5) inside that GT (5 x 8): IoU 25/40 = 0.625.
    # IoU 0.3 and 0.5: both images at threshold 0. IoU 0.7: only the first.
    assert (result["iou_30"], result["iou_50"], result["iou_70"]) == (1.0, 1.0, 0.5)


def test_threshold_curve_needs_the_right_class_for_top1():
    curve = ThresholdCurve([0.0, 0.6])
    curve.add(np.array([1.0, 0.0]), correct_cls=True)
    curve.add(np.array([0.0, 1.0]), correct_cls=False)
    assert curve.result() == {"cam_thresholds": [0.0, 0.6], "gt_known": [0.5, 0.5], "top1": [0.5, 0.0]}


def test_cam_thresholds_are_choe_et_als_raw_arange():
    assert len(cam_thresholds(0.001)) == 1000 and len(cam_thresholds(0.01)) == 100
    assert cam_thresholds(0.25).tolist() == [0.0, 0.25, 0.5, 0.75]
    # Unrounded: the 58th step of 0.01 is 0.5700000000000001 (np.arange's start + i x step).
    assert cam_thresholds(0.01)[57] == 0.5700000000000001 == 57 * 0.01
    with pytest.raises(ValueError, match="interval"):
        cam_thresholds(0.0)


def test_an_unrounded_threshold_cuts_where_the_reference_cuts():
    # A gray map whose maximum is 100: at 0.5700000000000001 the cut is int(57.00000000000001) = 57,
    # so a blob at gray 57 is dropped and only the pixel at 100 stays. Rounded to 0.57 the cut would be
    # int(56.99999999999999) = 56 and the blob's box would win.
    gray = np.zeros((1, 10, 10), np.uint8)
    gray[0, 2, 2] = 100
    gray[0, 5:8, 5:8] = 57
    threshold = cam_thresholds(0.01)[57]
    assert contour_sweeps(gray, [[threshold]], [[0]])[0].largest[0].tolist() == [2, 2, 3, 3]
    assert contour_sweeps(gray, [[0.57]], [[0]])[0].largest[0].tolist() == [5, 5, 8, 8]


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
    positive, negative = score_histograms(cam, mask, cam_thresholds(0.01))
    np.testing.assert_array_equal(positive, np.histogram(cam[mask], bins=edges)[0][:101])
    np.testing.assert_array_equal(negative, np.histogram(cam[~mask], bins=edges)[0][:101])
    assert score_histograms(np.array([np.float32(0.29)]), np.array([True]), cam_thresholds(0.01))[0][28] == 1


def test_default_score_bins_are_the_reference_codes_at_step_0001_on_float64_maps():
    """The default grid is np.arange(0, 1, 0.001) unrounded: a float64 score equal to a rounded edge
    (0.285 just under the raw 0.28500000000000003) falls in the bin below it, as in np.histogram."""
    rng = np.random.default_rng(7)
    edges = np.append(np.arange(0, 1, 0.001), [1.0, 2.0, 3.0])
    cam = np.concatenate([np.round(np.arange(1000) / 1000, 6), rng.random(3000), [1.0, 0.0]])
    mask = rng.random(cam.size) > 0.5
    positive, negative = score_histograms(cam, mask)
    assert len(positive) == 1001
    np.testing.assert_array_equal(positive, np.histogram(cam[mask], bins=edges)[0][:1001])
    np.testing.assert_array_equal(negative, np.histogram(cam[~mask], bins=edges)[0][:1001])
    assert score_histograms(np.array([0.285]), np.array([True]))[0][284] == 1


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
    pxap = PxAP()
    pxap.add(*score_histograms(cam, mask))
    expected, previous_recall = 0.0, 0.0
    for score in np.unique(cam)[::-1]:
        kept = cam >= score
        recall = (kept & mask).sum() / mask.sum()
        expected += (kept & mask).sum() / kept.sum() * (recall - previous_recall)
        previous_recall = recall
    assert pxap.result() == pytest.approx(expected)


@pytest.mark.parametrize("convention", ["inclusive", "half_open"])
def test_sweeps_equal_the_box_by_box_computation_on_random_maps(convention):
    """One contour sweep per map (compiled) gives what OpenCV's boxes_from_map / box_from_map give
    threshold by threshold, in either pixel convention."""
    rng = np.random.default_rng(1)
    thresholds = cam_thresholds(0.01)
    for _ in range(12):
        cam = upsample_map(rng.random((8, 8)).astype(np.float32), (64, 64))
        corners = rng.integers(0, 48, (3, 2))
        gts = np.concatenate([corners, corners + rng.integers(4, 17, (3, 2))], axis=1)  # three GT boxes
        best = [box_iou_max(maxboxacc_boxes(boxes_from_map(cam, float(t)), cam.shape, convention), gts, convention)
                for t in thresholds]
        largest = [box_iou(box_from_map(cam, float(t)), gts, convention).max() for t in thresholds]
        np.testing.assert_array_equal(best_box_ious(cam, gts, thresholds, convention), best)
        np.testing.assert_array_equal(largest_box_ious(cam, gts, thresholds, convention), largest)


def box_iou_max(boxes: np.ndarray, gts: np.ndarray, convention: str) -> float:
    """The best IoU of any of ``boxes`` with any GT box, one box at a time."""
    return max(box_iou(box, gts, convention).max() for box in boxes)


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
