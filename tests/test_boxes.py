"""The official map -> box protocol on maps drawn by hand, where the right box is known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tscam_core import (
    Explanation,
    MapSpec,
    box_from_map,
    boxes,
    boxes_from_map,
    localize,
    normalize_map,
    predict_box,
    upsample_map,
)
from tscam_core.boxes import (
    contour_areas,
    contour_sweep,
    contour_sweeps,
    largest_boxes,
    normalize_maps,
    quantize,
    upsample_grays,
    upsample_maps,
)
from tscam_core.level_sets import level_set_boxes
from tscam_core.metrics import cam_thresholds


def blank(height: int = 60, width: int = 80) -> np.ndarray:
    return np.zeros((height, width), np.float32)


def test_one_blob_gives_its_half_open_bounding_box():
    cam = blank()
    cam[10:20, 5:15] = 1.0
    np.testing.assert_array_equal(box_from_map(cam, 0.1), [5, 10, 15, 20])


def test_threshold_is_a_fraction_of_the_maximum():
    cam = blank()
    cam[10:50, 10:70] = 0.5  # a wide, weaker region
    cam[20:30, 30:40] = 1.0  # the peak
    np.testing.assert_array_equal(box_from_map(cam, 0.4), [10, 10, 70, 50])
    np.testing.assert_array_equal(box_from_map(cam, 0.6), [30, 20, 40, 30])
    # the same map at another scale gives the same boxes: only the fraction of the max matters
    np.testing.assert_array_equal(box_from_map(cam * 0.3, 0.4), [10, 10, 70, 50])


def test_empty_map_gives_the_official_placeholder_box():
    np.testing.assert_array_equal(box_from_map(blank(), 0.1), [0, 0, 1, 1])
    np.testing.assert_array_equal(predict_box(np.full((4, 4), 7.0), (30, 30), 0.1), [0, 0, 1, 1])
    assert boxes_from_map(blank(), 0.1).shape == (0, 4)
    for shape in ((0, 5), (5, 0)):  # no pixels at all: no contour at any threshold
        sweep = contour_sweep(np.zeros(shape, np.float32), [0.0, 0.5], largest_at=[0, 1])
        assert sweep.boxes.shape == (0, 4) and all(box.tolist() == [0, 0, 1, 1] for box in sweep.largest.values())
        assert normalize_maps(np.zeros((2, *shape))).shape == (2, *shape)


def test_regions_touching_the_border():
    cam = blank()
    cam[0:5, 0:8] = 1.0
    np.testing.assert_array_equal(box_from_map(cam, 0.5), [0, 0, 8, 5])
    cam = blank()
    cam[40:60, 65:80] = 1.0
    np.testing.assert_array_equal(box_from_map(cam, 0.5), [65, 40, 80, 60])
    ramp = np.tile(np.linspace(0.0, 1.0, 80, dtype=np.float32), (60, 1))  # every column but the first survives
    np.testing.assert_array_equal(box_from_map(ramp, 0.0), [1, 0, 80, 60])


def test_largest_contour_not_largest_rectangle_wins():
    cam = blank(80, 80)
    cam[5:15, 5:15] = 1.0  # a solid 10 x 10 square: contour area 81
    for i in range(30):  # a one-pixel diagonal: a huge bounding box around almost no area
        cam[40 + i, 40 + i] = 1.0
    np.testing.assert_array_equal(box_from_map(cam, 0.5), [5, 5, 15, 15])
    # the several-objects mode orders its boxes the same way: its first box is the official one
    np.testing.assert_array_equal(boxes_from_map(cam, 0.5), [[5, 5, 15, 15], [40, 40, 70, 70]])


def test_several_objects_with_a_minimum_area():
    cam = blank(100, 100)
    cam[5:15, 5:15] = 1.0  # 100 px
    cam[50:56, 60:66] = 0.9  # 36 px
    cam[90:92, 90:92] = 0.8  # 4 px
    all_boxes = boxes_from_map(cam, 0.1)
    np.testing.assert_array_equal(all_boxes, [[5, 5, 15, 15], [60, 50, 66, 56], [90, 90, 92, 92]])
    np.testing.assert_array_equal(boxes_from_map(cam, 0.1, min_area=10), [[5, 5, 15, 15], [60, 50, 66, 56]])
    assert boxes_from_map(cam, 0.1, min_area=1000).shape == (0, 4)
    np.testing.assert_array_equal(box_from_map(cam, 0.1), [5, 5, 15, 15])


def test_normalize_map():
    cam = np.array([[2.0, 4.0], [6.0, 10.0]], np.float32)
    np.testing.assert_allclose(normalize_map(cam), [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_array_equal(normalize_map(np.full((3, 3), 5.0)), np.zeros((3, 3)))
    np.testing.assert_array_equal(normalize_map(np.array([[np.nan, 1.0]])), np.zeros((1, 2)))
    np.testing.assert_allclose(normalize_map(torch.tensor(cam)), normalize_map(cam))


def test_upsample_keeps_height_width_order_and_normalises():
    cam = torch.zeros(4, 4)
    cam[1, 2] = 5.0  # a hot token in row 1, column 2
    up = upsample_map(cam, (30, 50))
    assert up.shape == (30, 50)
    assert up.min() == 0.0 and up.max() == pytest.approx(1.0)
    row, col = np.unravel_index(up.argmax(), up.shape)
    assert abs(row - 1.5 * 30 / 4) <= 3 and abs(col - 2.5 * 50 / 4) <= 4


def test_predict_box_is_the_full_protocol():
    cam = torch.zeros(4, 4)
    cam[0:2, 2:4] = 1.0  # top-right quarter of the token grid
    box = predict_box(cam, (40, 80), 0.5)
    # the box covers the top-right quarter of a 80-wide, 40-high image, give or take interpolation
    assert 30 <= box[0] <= 40 and box[1] == 0 and box[2] == 80 and 20 <= box[3] <= 30


def test_localize_upsamples_the_chosen_map_and_boxes_it():
    attention = torch.zeros(2, 3, 4, 4)
    attention[1, :, 2:4, 0:2] = 1.0  # image 1 attends to the bottom-left quarter
    semantic = torch.ones(2, 3, 4, 4)
    semantic[1, 2, :, :] = torch.arange(16.0).reshape(4, 4)
    explanation = Explanation(torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0]]), attention, semantic)
    result = localize(explanation, 2, (40, 60), threshold=0.5, spec=MapSpec("tscam", "last:2"), image_index=1)
    assert result.class_index == 2 and result.map01.shape == (40, 60)
    assert result.score == pytest.approx(torch.tensor([2.0, 0.0, 1.0]).softmax(0)[2].item())
    cam = explanation.select(1).maps(MapSpec("tscam", "last:2"), torch.tensor([[2]]))[0, 0]
    np.testing.assert_allclose(result.map01, upsample_map(cam, (40, 60)))
    np.testing.assert_array_equal(result.box, box_from_map(result.map01, 0.5))
    assert result.box[0] < 10 and result.box[1] >= 15 and result.box[3] == 40  # bottom-left, as attended


def official_boxes(cam01: np.ndarray, threshold: float) -> list[tuple[int, int, int, int]]:
    """The reference code's loop (Choe et al.), one threshold at a time: every contour's bounding box,
    holes' borders included (RETR_TREE)."""
    gray = (np.clip(cam01, 0, 1) * 255).astype(np.uint8)
    _, mask = cv2.threshold(gray, int(threshold * np.max(gray)), 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    return [(x, y, x + w, y + h) for x, y, w, h in map(cv2.boundingRect, contours)]


def official_box(cam01: np.ndarray, threshold: float) -> list[int]:
    """The official TS-CAM code's box: the first of the largest RETR_TREE contours, [0, 0, 1, 1] if none."""
    gray = (np.clip(cam01, 0, 1) * 255).astype(np.uint8)
    _, kept = cv2.threshold(gray, int(threshold * np.max(gray)), 255, cv2.THRESH_TOZERO)
    contours, _ = cv2.findContours(kept, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return [0, 0, 1, 1]
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    return [x, y, x + w, y + h]


def test_the_box_is_the_official_codes_ties_included():
    """Noise and plateaus give many contours of equal area (single pixels: area 0): the first one wins."""
    for cam in random_maps(60):
        for threshold in (0.0, 0.1, 0.3, 0.5, 0.8, 0.95):
            assert box_from_map(cam, threshold).astype(int).tolist() == official_box(cam, threshold), threshold


def random_maps(count: int) -> list[np.ndarray]:
    """Smooth maps upsampled from token grids (as evaluated), noise, plateaus with ties, empty and constant maps."""
    rng = np.random.default_rng(0)
    maps = [blank(), np.full((30, 40), 0.7, np.float32)]
    for i in range(count):
        tokens = rng.random((int(rng.integers(2, 15)), int(rng.integers(2, 15)))).astype(np.float32)
        cam = upsample_map(tokens ** (3 if i % 2 else 1), (int(rng.integers(8, 90)), int(rng.integers(8, 90))))
        if i % 5 == 0:
            cam = rng.random(cam.shape).astype(np.float32)
        if i % 7 == 0:
            cam = np.round(cam * 4) / 4
        maps.append(cam)
    return maps


def same_size_maps(count: int, size: tuple[int, int]) -> np.ndarray:
    """``random_maps`` brought to one size by nearest-neighbour resizing (noise and plateaus stay)."""
    return np.stack([cv2.resize(cam, size[::-1], interpolation=cv2.INTER_NEAREST) for cam in random_maps(count)[:count]])


def test_sweep_gives_every_threshold_the_boxes_of_the_one_threshold_loop():
    thresholds = cam_thresholds(0.01)
    for cam in random_maps(40):
        sweep = contour_sweep(cam, thresholds, largest_at=range(len(thresholds)))
        assert sweep.boxes.shape == (len(sweep.owner), 4)
        for j, threshold in enumerate(thresholds):
            got = sorted(map(tuple, sweep.boxes[sweep.owner == j].astype(int).tolist()))
            assert got == sorted(official_boxes(cam, float(threshold))), (j, threshold)
            np.testing.assert_array_equal(sweep.largest[j], box_from_map(cam, float(threshold)))


def test_sweep_boxes_include_hole_borders_and_islands_as_the_reference_code():
    cam = blank(40, 40)
    cam[5:35, 5:35] = 1.0
    cam[10:30, 10:30] = 0.0  # a ring ...
    cam[15:25, 15:25] = 0.8  # ... around an island
    sweep = contour_sweep(cam, [0.5, 0.9, 0.5], largest_at=[0, 1, 2])
    ring, island = [5, 5, 35, 35], [15, 15, 25, 25]
    hole_border = [9, 9, 31, 31]  # the ring's pixels next to the hole (rows and columns 10..29): one wider
    by_threshold = [sorted(sweep.boxes[sweep.owner == j].astype(int).tolist()) for j in range(3)]
    # At 0.5 x 255 = 127 the island (gray 204) is kept; above 0.9 x 255 = 229 it is gone.
    assert by_threshold == [sorted([ring, hole_border, island]), sorted([ring, hole_border]),
                            sorted([ring, hole_border, island])]
    assert all(np.array_equal(box, ring) for box in sweep.largest.values())  # the hole's contour is smaller
    empty = contour_sweep(blank(), [0.0, 0.5], largest_at=[1])
    assert empty.boxes.shape == (0, 4) and empty.owner.shape == (0,)
    np.testing.assert_array_equal(empty.largest[1], [0, 0, 1, 1])


def plain_upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The protocol's upsampling written out: resize, then (cam - min) / (max - min) with Python floats."""
    resized = cv2.resize(cam.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    low, high = float(resized.min()), float(resized.max())
    if not np.isfinite(low) or not np.isfinite(high) or high - low <= 1e-12:
        return np.zeros_like(resized)
    return (resized - low) / (high - low)


def test_batched_upsampling_is_bit_for_bit_the_one_map_computation():
    rng = np.random.default_rng(2)
    for trial in range(60):
        height, width = (int(v) for v in rng.integers(1, 12, 2))
        size = (int(rng.integers(1, 70)), int(rng.integers(1, 70)))
        cams = (rng.standard_normal((7, height, width)) ** 3 * 10.0 ** rng.uniform(-6, 4)).astype(np.float32)
        cams[1] = 0.25  # constant: all zeros
        cams[2, 0, 0] = np.nan if trial % 2 else np.inf  # not finite: all zeros
        expected = np.stack([plain_upsample(cam, size) for cam in cams])
        got = upsample_maps(cams, size)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(upsample_map(cams[0], size), expected[0])
        np.testing.assert_array_equal(normalize_maps(cams), np.stack([normalize_map(cam) for cam in cams]))
        maps01, grays = upsample_grays(cams, size)  # the compiled pass quantises as ``quantize`` does
        np.testing.assert_array_equal(maps01, expected)
        np.testing.assert_array_equal(grays, quantize(expected))
        assert not got[1].any() and got[0].max() in (0.0, 1.0)  # a one-pixel target is constant: 0


@pytest.mark.parametrize("trace_pixels", [1 << 23, 3000])  # 3000: one findContours call per few masks
def test_many_maps_in_one_sweep_equal_each_map_alone(monkeypatch, trace_pixels):
    """Stacked masks (a zero row between them) give each map exactly its own boxes: the same sets,
    the same official box at every threshold, thresholds repeated, off the grid or outside 0..1."""
    monkeypatch.setattr(boxes, "TRACE_PIXELS", trace_pixels)
    rng = np.random.default_rng(3)
    grid = cam_thresholds(0.01)
    for height, width in ((33, 47), (8, 9), (64, 64)):
        cams = []
        for i in range(9):
            tokens = rng.random((int(rng.integers(2, 9)), int(rng.integers(2, 9)))).astype(np.float32)
            cam = upsample_map(tokens ** (3 if i % 2 else 1), (height, width))
            cams.append(np.round(cam * 4) / 4 if i % 3 == 0 else cam)  # plateaus: ties between contours
        cams[4] = blank(height, width)
        cams[5] = np.ones((height, width), np.float32)
        cams[6] = rng.random((height, width)).astype(np.float32)  # noise: many contours per threshold
        thresholds = [grid if i % 2 == 0 else np.array([0.5, -0.2, 0.5, 1.3, 0.03, 0.0]) for i in range(len(cams))]
        largest_at = [range(len(t)) for t in thresholds]
        sweeps = contour_sweeps(quantize(np.stack(cams)), thresholds, largest_at)
        assert len(sweeps) == len(cams)
        for cam, ts, sweep in zip(cams, thresholds, sweeps, strict=True):
            assert sweep.boxes.shape == (len(sweep.owner), 4) and sweep.boxes.dtype == np.float32
            for j, threshold in enumerate(ts):
                got = sorted(map(tuple, sweep.boxes[sweep.owner == j].astype(int).tolist()))
                assert got == sorted(official_boxes(cam, float(threshold))), (j, threshold)
                np.testing.assert_array_equal(sweep.largest[j], box_from_map(cam, float(threshold)))


def test_level_set_boxes_are_the_boxes_of_opencvs_contours_at_every_cut():
    """Regions (8-connected) and holes (4-connected background away from the border, one pixel
    wider) against OpenCV's RETR_TREE contours, mask by mask: noise (many regions, holes inside
    holes), plateaus, rings; several maps in one call, cuts in any order, repeated, out of range."""
    rng = np.random.default_rng(7)
    grays = quantize(same_size_maps(48, (23, 31)))
    ring = np.zeros((12, 12), np.uint8)
    ring[2:10, 2:10], ring[4:8, 4:8], ring[5:7, 5:7] = 200, 0, 90  # a ring around an island
    for stack in [ring[None], *np.split(grays, 6)]:
        cuts = [rng.permutation(np.concatenate([rng.integers(-3, 260, 12), [0, 0, 255, -1]])) for _ in stack]
        cuts[len(cuts) // 2] = np.zeros(0, np.int64)  # a map without cuts
        map_of = np.repeat(np.arange(len(stack)), [len(c) for c in cuts])
        flat = np.concatenate(cuts)
        found, owner, regions, first = level_set_boxes(stack, map_of, flat)
        assert found.shape == (len(owner), 4)
        for k, (image, cut) in enumerate(zip(map_of, flat, strict=True)):
            mask = (stack[image].astype(int) > cut).astype(np.uint8)
            contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            expected = sorted((x, y, x + w, y + h) for x, y, w, h in map(cv2.boundingRect, contours))
            assert sorted(map(tuple, found[owner == k].tolist())) == expected, (image, cut)
            outer = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
            assert regions[k] == cv2.connectedComponents(mask, connectivity=8)[0] - 1 >= len(outer)
            if regions[k]:  # the first box is a region's (an outer contour's), not a hole's
                two_level, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
                outer_boxes = [[x, y, x + w, y + h] for (x, y, w, h), link in zip(
                    map(cv2.boundingRect, two_level), hierarchy[0], strict=True) if link[3] < 0]
                assert owner[first[k]] == k and found[first[k]].tolist() in outer_boxes
    with pytest.raises(ValueError, match="non-decreasing"):
        level_set_boxes(np.stack([ring, ring]), np.array([1, 0]), np.array([5, 5]))


def test_largest_boxes_are_the_official_box_of_each_map_at_its_threshold():
    rng = np.random.default_rng(8)
    maps = same_size_maps(40, (37, 29))
    thresholds = rng.choice([-0.1, 0.0, 0.05, 0.1, 0.35, 0.5, 0.9, 1.0, 1.2], len(maps))
    found = largest_boxes(quantize(maps), thresholds)
    assert found.shape == (len(maps), 4) and found.dtype == np.float32
    for cam, threshold, box in zip(maps, thresholds, found, strict=True):
        np.testing.assert_array_equal(box, box_from_map(cam, float(threshold)))
    assert largest_boxes(np.zeros((0, 5, 5), np.uint8), []).shape == (0, 4)
    with pytest.raises(ValueError, match="uint8"):
        largest_boxes(maps, thresholds)  # float maps: quantize them first
    with pytest.raises(ValueError, match="uint8"):
        contour_sweeps(maps, [[0.5]] * len(maps), [()] * len(maps))


def test_contour_areas_equal_opencv_one_contour_at_a_time():
    """Noise (one- and two-point contours), blobs with holes, and a tall image (large coordinates)."""
    rng = np.random.default_rng(4)
    for trial in range(30):
        height, width = (int(v) for v in rng.integers(2, 120, 2))
        mask = (rng.random((height, width)) > rng.uniform(0.2, 0.9)).astype(np.uint8)
        if trial % 3 == 0:
            mask = cv2.resize(mask, (width * 3, height * 3), interpolation=cv2.INTER_NEAREST)
        if trial % 5 == 0:
            mask = np.tile(mask, (60, 1))
        contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        lengths = np.array([len(c) for c in contours])
        points = np.concatenate(contours).reshape(-1, 2)
        got = contour_areas(points, np.cumsum(lengths) - lengths)
        np.testing.assert_array_equal(got, [cv2.contourArea(c) for c in contours])
    assert contour_areas(np.zeros((0, 2), np.int64), np.zeros(0, np.int64)).shape == (0,)


def test_loops_compile_without_a_writable_cache(monkeypatch):
    """A read-only install run without a home: numba refuses ``cache=True`` at decoration time;
    the loop is then compiled in the process (still nogil) instead of failing the import."""
    import numba

    from tscam_core.compiled import compiled

    real = numba.njit

    def no_cache_location(*args, **kwargs):
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", no_cache_location)

    def twice(values: np.ndarray) -> np.ndarray:
        return values * 2

    doubled = compiled(twice)
    np.testing.assert_array_equal(doubled(np.arange(3)), [0, 2, 4])
    assert doubled.targetoptions.get("nogil")
