"""Every contour's box at every cut of a gray map, from one union-find pass over its pixels.

MaxBoxAccV2 wants the bounding box of every contour (``cv2.RETR_TREE``) at each of ~100 CAM
thresholds. Tracing each mask costs a pass over all its pixels per threshold. But the boxes need
no contour: an outer contour bounds one 8-connected region of the mask, and a hole's contour runs
along the mask pixels 4-adjacent to one 4-connected background region that does not reach the
image border, so it bounds that region grown by one pixel. Regions only grow and merge as the
cut falls (and background regions as it rises), so adding the pixels in gray order to a
union-find that keeps each region's box yields the regions of every cut in one pass.
``tests/test_boxes.py`` checks the result against OpenCV's contours, threshold by threshold.

The loops are compiled by numba (``compiled``): the first call in a process compiles them, or
loads them from numba's on-disk cache.
"""

from __future__ import annotations

import numpy as np

from .compiled import compiled

#: The 8 neighbours (dy, dx) of the regions of a mask; the first 4 are the 4 of background regions.
_NEIGHBOURS = np.array([[-1, 0], [1, 0], [0, -1], [0, 1], [-1, -1], [-1, 1], [1, -1], [1, 1]], np.int64)


def level_set_boxes(grays: np.ndarray, map_of: np.ndarray, cuts: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The contours' boxes of the masks ``grays[map_of[k]] > cuts[k]`` for every k.

    ``grays`` is N x H x W uint8, ``map_of`` non-decreasing. Returns ``boxes`` (M x 4 int64,
    half-open ``[x0, y0, x1, y1]``) and ``owner`` (M: the k of each box), then per k the number
    of regions (outer contours) and where the first region's box sits in ``boxes``.
    """
    grays = np.ascontiguousarray(grays, dtype=np.uint8)
    map_of = np.asarray(map_of, dtype=np.int64)
    cuts = np.clip(np.asarray(cuts, dtype=np.int64), -1, 255)  # below 0 keeps all, 255 none
    if map_of.size and np.any(np.diff(map_of) < 0):
        raise ValueError("map_of must be non-decreasing: each map's cuts together")
    starts = np.searchsorted(map_of, np.arange(len(grays) + 1))
    by_cut = np.lexsort((cuts, map_of))  # each map's cuts, lowest first
    return _sweep(grays, starts, cuts, by_cut, _NEIGHBOURS)


@compiled
def _find(parent: np.ndarray, pixel: int) -> int:
    root = pixel
    while parent[root] != root:
        root = parent[root]
    while parent[pixel] != root:  # path compression
        parent[pixel], pixel = root, parent[pixel]
    return root


@compiled
def _grown(boxes: np.ndarray, owner: np.ndarray, needed: int) -> tuple[np.ndarray, np.ndarray]:
    if needed <= len(owner):
        return boxes, owner
    size = max(needed, 2 * len(owner))
    more_boxes, more_owner = np.empty((size, 4), np.int64), np.empty(size, np.int64)
    more_boxes[:len(owner)], more_owner[:len(owner)] = boxes, owner
    return more_boxes, more_owner


@compiled
def _gray_order(gray: np.ndarray, stride: int, order: np.ndarray) -> None:
    """The pixels (as cells of the framed grid) darkest first, by a counting sort over the 256 levels."""
    height, width = gray.shape
    histogram = np.zeros(257, np.int64)
    for y in range(height):
        for x in range(width):
            histogram[gray[y, x] + 1] += 1
    histogram = histogram.cumsum()
    for y in range(height):
        for x in range(width):
            order[histogram[gray[y, x]]] = (y + 1) * stride + x + 1
            histogram[gray[y, x]] += 1


@compiled
def _sweep(grays: np.ndarray, starts: np.ndarray, cuts: np.ndarray, by_cut: np.ndarray, neighbours: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``level_set_boxes``: map i's cuts are ``by_cut[starts[i]:starts[i + 1]]``, lowest cut first.

    Two passes per map. Regions: mask pixels (gray > cut), 8-connected, added brightest first as
    the cut falls. Holes: background pixels (gray <= cut), 4-connected, added darkest first as it
    rises. After the pixels of each cut are in, every live root is one box of that cut.
    """
    count, height, width = grays.shape
    stride = width + 2  # pixels live in a frame one pixel wider on each side that is never added
    cells = (height + 2) * stride
    boxes, owner = np.empty((1024, 4), np.int64), np.empty(1024, np.int64)
    regions, first = np.zeros(len(cuts), np.int64), np.zeros(len(cuts), np.int64)
    found = 0
    parent = np.empty(cells, np.int64)
    size = np.empty(cells, np.int64)
    y0, x0 = np.empty(cells, np.int64), np.empty(cells, np.int64)  # inclusive extent of each root's region
    y1, x1 = np.empty(cells, np.int64), np.empty(cells, np.int64)
    border = np.empty(cells, np.bool_)
    roots = np.empty(cells, np.int64)
    slot = np.empty(cells, np.int64)  # where each root sits in ``roots``
    order = np.empty(height * width, np.int64)
    offsets = neighbours[:, 0] * stride + neighbours[:, 1]
    for image in range(count):
        first_cut, last_cut = starts[image], starts[image + 1]
        if first_cut == last_cut:
            continue
        gray = grays[image]
        _gray_order(gray, stride, order)
        for background in (False, True):
            parent[:] = -1
            live, added = 0, 0
            links = 4 if background else 8
            for step in range(last_cut - first_cut):
                k = by_cut[first_cut + step] if background else by_cut[last_cut - 1 - step]
                while added < len(order):
                    p = order[added] if background else order[len(order) - 1 - added]
                    y, x = p // stride - 1, p % stride - 1
                    if (gray[y, x] > cuts[k]) == background:
                        break
                    added += 1
                    edge = y == 0 or x == 0 or y == height - 1 or x == width - 1
                    a = -1  # the root of p's region once p has joined one
                    for n in range(links):
                        q = p + offsets[n]
                        if parent[q] < 0:
                            continue
                        b = _find(parent, q)
                        if a < 0:  # p joins its first neighbour's region
                            a, parent[p] = b, b
                            size[b] += 1
                            y0[b], x0[b], y1[b], x1[b] = min(y0[b], y), min(x0[b], x), max(y1[b], y), max(x1[b], x)
                            border[b] = border[b] or edge
                        elif a != b:  # p links two regions: the smaller joins the larger
                            if size[a] < size[b]:
                                a, b = b, a
                            parent[b] = a
                            size[a] += size[b]
                            y0[a], x0[a] = min(y0[a], y0[b]), min(x0[a], x0[b])
                            y1[a], x1[a] = max(y1[a], y1[b]), max(x1[a], x1[b])
                            border[a] = border[a] or border[b]
                            live -= 1
                            roots[slot[b]] = roots[live]
                            slot[roots[live]] = slot[b]
                    if a < 0:  # no neighbour yet: a region of its own
                        parent[p], size[p] = p, 1
                        y0[p], x0[p], y1[p], x1[p] = y, x, y, x
                        border[p] = edge
                        roots[live], slot[p] = p, live
                        live += 1
                if not background:
                    regions[k], first[k] = live, found
                boxes, owner = _grown(boxes, owner, found + live)
                grow = 1 if background else 0  # a hole's contour runs on the mask pixels around it
                for r in range(live):
                    root = roots[r]
                    if background and border[root]:
                        continue  # background that reaches the image border is no hole
                    boxes[found, 0], boxes[found, 1] = x0[root] - grow, y0[root] - grow
                    boxes[found, 2], boxes[found, 3] = x1[root] + 1 + grow, y1[root] + 1 + grow
                    owner[found] = k
                    found += 1
    return boxes[:found], owner[:found], regions, first
