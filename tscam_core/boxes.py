"""From a localization map to boxes, by the official TS-CAM / CAM protocol.

The map is upsampled to the image, min-max normalised, quantised to 0..255, kept where it
is above ``threshold x max``; the box is the bounding rectangle of the largest contour.
Boxes are ``[x, y, x + w, y + h]`` from ``cv2.boundingRect``, as the official code writes them
(``get_bboxes`` in TS-CAM's ``lib/cams_deit.py``): the mask's bounding box with half-open extents
(see ``transforms``). The metrics count their pixels inclusively by default, as both reference
codes' IoU does, which makes such a box one column and one row wider than the pixels it bounds
(``tscam_core.overlaps``).

"Every contour" means what it does in Choe et al.'s reference code (``cv2.RETR_TREE``): the outer
border of each region, and also the border of each hole in a region and each region inside a
hole. A hole's contour is never larger than its region's, so the largest box is the same either way.

Many maps are scored at once from their quantised (gray) maps: ``upsample_grays`` normalises and
quantises in one compiled pass, ``contour_sweeps`` gives every contour's box at many thresholds
(``level_sets``) and ``largest_boxes`` the official box of many maps, each equal to the one-map
functions above number for number.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from .compiled import compiled
from .level_sets import level_set_boxes

#: The box the official TS-CAM code returns when nothing survives the threshold (``get_bboxes``).
EMPTY_BOX = np.array([0, 0, 1, 1], dtype=np.float32)


def as_numpy(cam: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(cam, torch.Tensor):
        cam = cam.detach().float().cpu().numpy()
    return np.asarray(cam, dtype=np.float32)


def normalize_map(cam: np.ndarray | Tensor) -> np.ndarray:
    """Min-max to [0, 1]; a constant map (no evidence anywhere) becomes all zeros."""
    cam = as_numpy(cam)
    return normalize_maps(cam.reshape(1, *cam.shape))[0]


def normalize_maps(cams: np.ndarray) -> np.ndarray:
    """``normalize_map`` of each of N maps (N x ...) at once: ``(cam - low) / (high - low)`` in float32,
    the span taken in float64 and rounded once, as Python floats would; constant or non-finite maps -> 0."""
    cams = np.array(cams, dtype=np.float32)  # a copy, normalised in place
    _normalize(_rows(cams), _NO_GRAYS)
    return cams


def upsample_map(cam: np.ndarray | Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an h x w map to (height, width), then min-max normalised."""
    return upsample_maps(as_numpy(cam)[None], size)[0]


def upsample_maps(cams: np.ndarray | Tensor, size: tuple[int, int]) -> np.ndarray:
    """``upsample_map`` of each of N maps (N x h x w), normalised in one step."""
    maps = _resized(cams, size)
    _normalize(_rows(maps), _NO_GRAYS)
    return maps


def upsample_grays(cams: np.ndarray | Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``upsample_maps`` and the ``quantize`` of each map, both from one pass over the pixels."""
    maps = _resized(cams, size)
    grays = np.empty(maps.shape, np.uint8)
    _normalize(_rows(maps), _rows(grays))
    return maps, grays


def _resized(cams: np.ndarray | Tensor, size: tuple[int, int]) -> np.ndarray:
    """Each map resized alone: OpenCV's multi-channel resize rounds differently from the
    one-channel one, and a map must give the same boxes in a batch as alone."""
    height, width = (int(v) for v in size)
    cams = np.ascontiguousarray(as_numpy(cams))
    resized = np.empty((len(cams), height, width), np.float32)
    for cam, out in zip(cams, resized, strict=True):
        out[...] = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width)
    return resized


_NO_GRAYS = np.zeros((0, 0), np.uint8)


def _rows(maps: np.ndarray) -> np.ndarray:
    """N x ... as N x P (a view): one row of pixels per map, also where N or P is 0."""
    return maps.reshape(len(maps), int(np.prod(maps.shape[1:])))


@compiled
def _normalize(maps: np.ndarray, grays: np.ndarray) -> None:
    """Rows of ``maps`` (N x P float32) min-max normalised in place and, where ``grays`` has rows,
    quantised into them: the numbers of numpy's ``(cam - low) / span`` and ``quantize``, in one
    pass per row instead of a temporary array per step (tens of MB for a batch of 224 px maps)."""
    for i in range(maps.shape[0]):
        row = maps[i]
        if row.size == 0:
            continue
        low, high, finite = row[0], row[0], True
        for value in row:
            finite = finite and np.isfinite(value)
            low, high = min(low, value), max(high, value)
        span = np.float64(high) - np.float64(low)
        if not (finite and span > 1e-12):
            row[:] = 0.0
            if grays.shape[0]:
                grays[i] = 0
            continue
        span32 = np.float32(span)
        for j in range(row.size):
            row[j] = (row[j] - low) / span32
            if grays.shape[0]:
                grays[i, j] = np.uint8(min(max(row[j], np.float32(0.0)), np.float32(1.0)) * np.float32(255.0))


def quantize(cam01: np.ndarray) -> np.ndarray:
    """The official 0..255 gray map that every CAM threshold cuts."""
    return (np.asarray(cam01).clip(0.0, 1.0) * 255).astype(np.uint8)


def threshold_mask(cam01: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 mask of the pixels the official protocol keeps: 255 * cam above int(threshold * max)."""
    gray = quantize(cam01)
    return cv2.threshold(gray, int(threshold * gray.max()), 255, cv2.THRESH_BINARY)[1]  # 255 where gray > cut


#: Every contour, holes' borders included (see the module docstring).
CONTOUR_MODE = cv2.RETR_TREE


def _contours(mask: np.ndarray) -> Sequence[np.ndarray]:
    return cv2.findContours(mask, CONTOUR_MODE, cv2.CHAIN_APPROX_SIMPLE)[0]


def _rects(contours: Sequence[np.ndarray]) -> np.ndarray:
    """Each contour's bounding box, K x 4 float32, half-open."""
    boxes = np.array([cv2.boundingRect(c) for c in contours], dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def _largest_first(contours: Sequence[np.ndarray]) -> np.ndarray:
    """Order by contour area, ties to the first found: the official box comes first.

    The official code takes ``max(contours, key=cv2.contourArea)`` over ``RETR_TREE`` contours,
    which is the first of the largest; a stable sort keeps that one first.
    """
    return np.argsort(-contour_areas(*_flat_points(contours)), kind="stable")


def _flat_points(contours: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All contours' points in one P x 2 array, and where each contour starts in it."""
    if not contours:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    lengths = np.fromiter(map(len, contours), np.int64, len(contours))
    return np.concatenate(contours).reshape(-1, 2), np.cumsum(lengths) - lengths


def contour_areas(points: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``cv2.contourArea`` of every contour (``points[starts[k]:starts[k + 1]]``) in one vectorised step.

    The shoelace sum in 64-bit integers: OpenCV sums the same integer products in doubles, which
    is exact at any image size, so the values are equal, without a call per contour.
    """
    xy = np.asarray(points, dtype=np.int64)
    if len(starts) == 0:
        return np.zeros(0)
    previous = np.roll(xy, 1, axis=0)
    previous[starts] = xy[np.append(starts[1:], len(xy)) - 1]  # each contour is closed on itself
    cross = previous[:, 0] * xy[:, 1] - previous[:, 1] * xy[:, 0]
    return np.abs(np.add.reduceat(cross, starts)) * 0.5


def box_from_map(cam01: np.ndarray, threshold: float) -> np.ndarray:
    """The bounding box of the largest contour of a normalised, image-sized map."""
    boxes = boxes_from_map(cam01, threshold)
    return boxes[0] if len(boxes) else EMPTY_BOX.copy()


def boxes_from_map(cam01: np.ndarray, threshold: float, min_area: float = 0.0) -> np.ndarray:
    """Every contour's box (K x 4), largest contour first, dropping boxes under ``min_area`` pixels.

    The first box is the official protocol's, ties in contour area included (see ``_largest_first``).
    """
    contours = _contours(threshold_mask(cam01, threshold))
    boxes = _rects(contours)[_largest_first(contours)]
    return boxes[(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) >= min_area]


@dataclass(frozen=True)
class ContourSweep:
    """Every contour's box at every CAM threshold of a sweep, and the official box where asked.

    ``owner[i]`` is the index of the threshold that ``boxes[i]`` came from; ``largest[j]`` is
    ``box_from_map(cam01, thresholds[j])`` for each asked ``j``; ``shape`` is the map's (height, width).
    """

    boxes: np.ndarray
    owner: np.ndarray
    largest: dict[int, np.ndarray]
    shape: tuple[int, int]


def contour_sweep(cam01: np.ndarray, thresholds: Sequence[float], largest_at: Iterable[int] = ()) -> ContourSweep:
    """``boxes_from_map`` at many thresholds for little more than the price of one.

    The boxes are exactly those of ``boxes_from_map(cam01, t)`` (as a set; ``largest`` in the
    official order). See ``contour_sweeps`` for how.
    """
    return contour_sweeps(quantize(cam01)[None], [thresholds], [largest_at])[0]


#: Mask pixels traced by one findContours call in ``_trace`` (bounds its buffer to 8 MiB).
TRACE_PIXELS = 1 << 23


def contour_sweeps(grays: np.ndarray, thresholds: Sequence[Sequence[float]],
                   largest_at: Sequence[Iterable[int]]) -> list[ContourSweep]:
    """``contour_sweep`` of each of N same-sized gray maps (N x H x W, as ``quantize`` gives them),
    map i at ``thresholds[i]``.

    Every box of every cut comes from one union-find pass per map (``level_sets.level_set_boxes``),
    and so does the official box where the mask is one region. Where it has several, choosing
    needs their contours' areas: those masks are traced by OpenCV, all together (``_trace``).
    """
    count = len(_check_grays(grays))
    if len(thresholds) != count or len(largest_at) != count:
        raise ValueError(f"{count} maps need as many threshold lists and largest_at lists")
    lengths = np.array([len(ts) for ts in thresholds], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    map_of = np.repeat(np.arange(count), lengths)
    cuts = _cuts(grays, map_of, np.concatenate([np.asarray(ts, np.float64).reshape(-1) for ts in thresholds]
                                               or [np.zeros(0)]))
    boxes, owner, regions, first = level_set_boxes(grays, map_of, cuts)
    asked = np.array([starts[i] + int(j) for i, js in enumerate(largest_at) for j in js], np.int64)
    largest = np.repeat(EMPTY_BOX[None], len(asked), axis=0)
    one, several = regions[asked] == 1, regions[asked] > 1
    largest[one] = boxes[first[asked[one]]]
    tiles, tile_of = np.unique(asked[several], return_inverse=True)
    largest[several] = _trace(grays, map_of[tiles], cuts[tiles]).largest(tile_of)
    edges = np.searchsorted(map_of[owner], np.arange(count + 1))  # a map's boxes are contiguous
    chosen = iter(largest)
    return [ContourSweep(boxes[edges[i]:edges[i + 1]].astype(np.float32), owner[edges[i]:edges[i + 1]] - starts[i],
                         {int(j): next(chosen) for j in largest_at[i]}, grays.shape[1:]) for i in range(count)]


def largest_boxes(grays: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """``box_from_map`` of each of N gray maps (N x H x W, as ``quantize`` gives them) at its own
    threshold, N x 4: all masks traced by one OpenCV pass (``_trace``)."""
    count = len(_check_grays(grays))
    tiles = np.arange(count)
    return _trace(grays, tiles, _cuts(grays, tiles, np.asarray(thresholds, np.float64).reshape(count))).largest(tiles)


def _check_grays(grays: np.ndarray) -> np.ndarray:
    if not isinstance(grays, np.ndarray) or grays.dtype != np.uint8 or grays.ndim != 3:
        raise ValueError(f"gray maps must be an N x H x W uint8 array (boxes.quantize), got {type(grays).__name__} "
                         f"{getattr(grays, 'dtype', '')} {getattr(grays, 'shape', '')}")
    return grays


def _cuts(grays: np.ndarray, map_of: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The gray level each threshold cuts its map at, as ``threshold_mask``: kept where gray > int(t x max)."""
    top = grays.max(axis=(1, 2), initial=0).astype(np.float64)
    return (thresholds * top[map_of]).astype(np.int64)


@dataclass
class _Traced:
    """Contours of stacked masks: boxes (K x 4) and areas in tile order, tile t owning starts[t]:ends[t]."""

    boxes: np.ndarray
    areas: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    def largest(self, tiles: np.ndarray) -> np.ndarray:
        """The official box of each tile (len(tiles) x 4): ``_largest_first``'s order, for all tiles in one sort."""
        out = np.repeat(EMPTY_BOX[None], len(tiles), axis=0)
        counts = self.ends[tiles] - self.starts[tiles]
        if not counts.any():
            return out
        member = np.repeat(self.starts[tiles] - (np.cumsum(counts) - counts), counts)
        member += np.arange(member.size)
        group = np.repeat(np.arange(len(tiles)), counts)
        boxes = self.boxes[member]
        order = np.lexsort((-self.areas[member], group))  # stable: ties to the first found
        firsts = order[np.searchsorted(group[order], np.flatnonzero(counts))]
        out[np.flatnonzero(counts)] = boxes[firsts]
        return out


def _trace(grays: np.ndarray, tile_map: np.ndarray, tile_cut: np.ndarray) -> _Traced:
    """Contours of the masks ``grays[tile_map[t]] > tile_cut[t]``, each in its own band of a tall image.

    One findContours call traces all the bands (more only past ``TRACE_PIXELS``): no contour
    crosses a zero row, and OpenCV pads the image border with zeros. A band holds only the rows
    its mask occupies (a row is occupied where its highest gray level is above the cut), then
    one zero row. The rows left out are empty, so the band's contours, and their order, are
    those of the whole mask; the trace just scans fewer pixels (high cuts leave few rows).
    ``tile_map`` is non-decreasing (a map's tiles are contiguous).
    """
    _, height, width = grays.shape
    if grays.size == 0:  # a map without pixels has no contour
        return _Traced(np.zeros((0, 4), np.float32), np.zeros(0), *np.zeros((2, len(tile_map)), np.int64))
    traced, tile_rows = np.unique(tile_map, return_inverse=True)  # only the maps with a tile
    occupied = grays[traced].max(axis=2)[tile_rows] > tile_cut[:, None]  # tiles x height
    filled = occupied.any(axis=1)
    top = occupied.argmax(axis=1)
    rows = np.where(filled, height - occupied[:, ::-1].argmax(axis=1) - top, 0)
    bands = np.where(filled, rows + 1, 0)
    ends = np.cumsum(bands)
    starts = ends - bands
    per_call = max(height + 1, TRACE_PIXELS // width)
    flat = grays.reshape(-1, width)
    levels = np.clip(tile_cut, 0, 255).astype(np.uint8)  # compared as uint8, which is fastest...
    everything = tile_cut < 0  # ...and a negative cut keeps every pixel
    contours: list[np.ndarray] = []
    row_offsets: list[np.ndarray] = []  # where each contour's tall image starts among all bands
    first = 0
    while first < len(tile_map):  # as many bands as fit in TRACE_PIXELS, at least one
        last = max(first + 1, int(np.searchsorted(ends, starts[first] + per_call, side="right")))
        owner = np.repeat(np.arange(first, last), bands[first:last])  # the tile of each row
        offset = np.arange(owner.size) + starts[first] - starts[owner]
        separator = offset == rows[owner]
        source = np.where(separator, 0, tile_map[owner] * height + top[owner] + offset)
        cut = np.where(separator, 255, levels[owner])  # gray > 255 nowhere: a zero row
        tall = np.greater(flat.take(source, axis=0), cut[:, None]).view(np.uint8)
        tall[everything[owner] & ~separator] = 1
        found = cv2.findContours(tall, CONTOUR_MODE, cv2.CHAIN_APPROX_SIMPLE)[0] if tall.size else ()
        contours.extend(found)
        row_offsets.append(np.full(len(found), starts[first]))
        first = last
    if not contours:
        return _Traced(np.zeros((0, 4), np.float32), np.zeros(0), *np.zeros((2, len(tile_map)), np.int64))
    points, firsts = _flat_points(contours)
    low, high = np.minimum.reduceat(points, firsts), np.maximum.reduceat(points, firsts)
    row_offset = np.concatenate(row_offsets)
    row = low[:, 1] + row_offset  # a contour lies in one band: its top row tells which
    tile = np.searchsorted(starts, row, side="right") - 1  # an empty tile's band is the next one's start
    shift = (top[tile] - starts[tile] + row_offset)[:, None]
    boxes = np.concatenate([low[:, :1], low[:, 1:] + shift, high[:, :1] + 1, high[:, 1:] + 1 + shift], axis=1)
    order = np.argsort(tile, kind="stable")
    edges = np.searchsorted(tile[order], np.arange(len(tile_map) + 1))
    areas = contour_areas(points, firsts)  # a translation leaves them unchanged
    return _Traced(boxes[order].astype(np.float32), areas[order], edges[:-1], edges[1:])


def predict_box(cam: np.ndarray | Tensor, size: tuple[int, int], threshold: float) -> np.ndarray:
    """Map (h x w, any scale) to one box in a (height, width) image: the full official protocol."""
    return box_from_map(upsample_map(cam, size), threshold)
