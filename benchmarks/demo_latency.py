"""Section 6: the demo's server-side latency, through tscam_core.explorer (what app.py is a view of).

The work per event mirrors app.py's handlers: a threshold change moves the box (box, main
overlay, JSON); any other control (class, layers, variant, opacity, colormap) redraws every
view (box, main overlay, A*/S_c/M_c, per-layer gallery, JSON) from the cached explanation,
with no forward pass; an upload decodes, explains and draws every view once.
"""

from __future__ import annotations

import io
import itertools
import statistics
import time
from collections.abc import Callable

from benchmarks.measure import Budget, photo
from benchmarks.report import Goal, Row, Skipped
from tscam_core import TSCAM, MapSpec

CONTROL_GOAL_MS = Goal("<=", 50.0)
UPLOAD_GOAL_MS = Goal("<=", 1000.0)
CONTROL_IMAGE = (224, 224)
UPLOAD_IMAGE = (640, 480)
METHOD = ("tscam_core.explorer, the work of app.py's handlers: threshold change = box + main overlay + JSON; other "
          "control change = box + main overlay + A*/S_c/M_c overlays + layer gallery + JSON, from the cached "
          "explanation; upload = decode + explain + every view; absolute latencies (median)")
VIEW_PARTS = ("box", "overlay", "A*/S_c/M_c", "gallery", "JSON")


class _Stopwatch:
    """Milliseconds spent in each named part of a redraw, to show where a slow update goes."""

    def __init__(self) -> None:
        self.parts: dict[str, list[float]] = {part: [] for part in VIEW_PARTS}
        self._last = 0.0

    def start(self) -> None:
        self._last = time.perf_counter()

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.parts[part].append((now - self._last) * 1e3)
        self._last = now

    def summary(self, last: int) -> str:
        return ", ".join(f"{part} {statistics.median(times[-last:]):.1f}" for part, times in self.parts.items())


def jpeg_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """An upload as a browser sends it: a JPEG-encoded photo."""
    buffer = io.BytesIO()
    photo(width, height, seed).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def demo_latency(model: TSCAM, label: str, budget: Budget) -> list[Row]:
    try:
        from tscam_core.explorer import Explorer, Settings
    except ImportError as error:
        raise Skipped(f"tscam_core.explorer is not available ({error})") from error
    explorer = Explorer(model)
    watch = _Stopwatch()

    def move_box(explained, settings: Settings) -> None:
        result = explained.result(settings)
        explained.render(settings, result)
        explained.export(settings, result)

    def redraw(explained, settings: Settings) -> None:
        watch.start()
        result = explained.result(settings)
        watch.lap("box")
        explained.render(settings, result)
        watch.lap("overlay")
        explained.render_maps(settings)
        watch.lap("A*/S_c/M_c")
        explained.layer_gallery(settings)
        watch.lap("gallery")
        explained.export(settings, result)
        watch.lap("JSON")

    explained = explorer.explain(jpeg_bytes(*CONTROL_IMAGE), name="control.jpg")
    other_class = explained.ranked_classes(2)[-1].index
    thresholds = itertools.cycle([Settings(threshold=t) for t in (0.2, 0.3, 0.05, 0.1)])
    views = itertools.cycle([Settings(class_index=other_class), Settings(map=MapSpec("tscam", "first:1")),
                    Settings(map=MapSpec("trans_attention")), Settings(map=MapSpec("trans_cam")),
                    Settings(opacity=0.7), Settings(colormap="viridis"), Settings()])
    count = 7 * budget.repeats
    threshold_times = _latencies(lambda: move_box(explained, next(thresholds)), count, budget.warmup)
    view_times = _latencies(lambda: redraw(explained, next(views)), count, budget.warmup)
    parts = watch.summary(count)

    upload = jpeg_bytes(*UPLOAD_IMAGE, seed=1)
    upload_times = _latencies(lambda: redraw(explorer.explain(upload, name="upload.jpg"), Settings()),
                              budget.repeats, budget.warmup)
    control = f"{CONTROL_IMAGE[0]}x{CONTROL_IMAGE[1]} JPEG"
    return [
        Row(6, label, 1, control, "threshold change (no forward)", statistics.median(threshold_times), unit="ms",
            goal=CONTROL_GOAL_MS, detail=f"median of {count}; slowest {max(threshold_times):.1f} ms"),
        Row(6, label, 1, control, "other control change (no forward)", statistics.median(view_times), unit="ms",
            goal=CONTROL_GOAL_MS,
            detail=f"median of {count} changes of class, layers, variant, opacity, colormap; slowest "
                   f"{max(view_times):.1f} ms; median parts (ms): {parts}"),
        Row(6, label, 1, f"{UPLOAD_IMAGE[0]}x{UPLOAD_IMAGE[1]} JPEG", "upload (decode, explain, every view)",
            statistics.median(upload_times), unit="ms", goal=UPLOAD_GOAL_MS,
            detail=f"median of {len(upload_times)}; slowest {max(upload_times):.1f} ms"),
    ]


def _latencies(run: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    """Milliseconds per call (nothing to interleave with: these are absolute latency goals)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return times
