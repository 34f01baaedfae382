"""What an evaluation measures and with how many workers: ``EvalSettings``, recorded in summary.json."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from .. import methods
from ..explanation import DEFAULT_MAP, MapSpec
from ..metrics import CAM_CURVE_INTERVAL
from ..overlaps import BOX_CONVENTIONS, DEFAULT_BOX_CONVENTION, BoxConvention


def default_loader_workers() -> int:
    """Decoding processes: one per two cores beyond the two that the model and the scoring pool keep busy."""
    return max(0, min(4, (usable_cores() - 2) // 2))


@dataclass(frozen=True)
class EvalSettings:
    """What is measured and how; recorded in summary.json["settings"]."""

    cam_threshold: float = 0.1  # the paper's threshold for the box of the main setting
    map: MapSpec = MapSpec()  # the main map; the other variants use its blocks and sign convention
    method: str | None = None  # a tscam_core.methods name scored instead of ``map`` (see ``scored``)
    iou_threshold: float = 0.5  # Top-1/Top-5 Loc need IoU above it, GT-known Loc at least it (official code)
    box_convention: BoxConvention = DEFAULT_BOX_CONVENTION  # pixels counted inclusively, as both references
    cam_curve_interval: float = CAM_CURVE_INTERVAL  # MaxBoxAccV2 sweep and PxAP bins (Choe et al.'s step, 0.001)
    threshold_curve_interval: float = 0.05  # accuracy vs CAM threshold (largest contour)
    batch_size: int = 32
    threads: int | None = None  # scoring workers (None: see ScoringPool.of)
    pool: Literal["auto", "thread", "process"] = "auto"  # auto: processes from PROCESS_POOL_CORES cores on
    loader_workers: int = field(default_factory=default_loader_workers)  # 0: a decoding thread
    model_threads: int | None = None  # torch's CPU threads during the run (None: as set); see evaluate()
    graph: bool = True  # the explain pass as one traced graph, free of the GIL while the pool scores (tscam_core.graph)
    thumbnails: int = 16  # images sampled for success thumbnails (failures always get one)
    thumbnail_size: int = 128  # longest side at most; never larger than the model input
    limit: int | None = None
    seed: int = 0

    def record(self) -> dict:
        """summary.json's settings: the map's keys only where the method is a view of the explanation."""
        scored = self.scored
        return {
            "cam_threshold": self.cam_threshold, **(scored.spec.record() if scored.spec else {}),
            "method": scored.record(),
            "iou_threshold": self.iou_threshold, "box_convention": self.box_convention,
            "cam_curve_interval": self.cam_curve_interval,
            "threshold_curve_interval": self.threshold_curve_interval, "frame": "model_input",
            "batch_size": self.batch_size, "limit": self.limit, "threads": self.scoring.workers,
            "pool": self.scoring.kind, "graph": self.uses_graph,
        }

    def __post_init__(self) -> None:
        # Out-of-range settings fail here, by name: none of them may quietly give a run of no images
        # (a batch size under 1), of all but the last images (a negative limit) or of empty boxes.
        problems = [f"{name} must be {rule}, got {value}" for name, value, ok, rule in (
            ("batch_size", self.batch_size, self.batch_size >= 1, "at least 1"),
            ("limit", self.limit, self.limit is None or self.limit >= 0, "0 or more"),
            ("cam_threshold", self.cam_threshold, 0.0 <= self.cam_threshold < 1.0, "within [0, 1)"),
            ("iou_threshold", self.iou_threshold, 0.0 < self.iou_threshold <= 1.0, "within (0, 1]"),
            ("box_convention", repr(self.box_convention), self.box_convention in BOX_CONVENTIONS,
             f"one of {', '.join(BOX_CONVENTIONS)}"),
            ("cam_curve_interval", self.cam_curve_interval, 0.0 < self.cam_curve_interval <= 1.0, "within (0, 1]"),
            ("threshold_curve_interval", self.threshold_curve_interval, 0.0 < self.threshold_curve_interval <= 1.0,
             "within (0, 1]"),
            ("thumbnails", self.thumbnails, self.thumbnails >= 0, "0 or more"),
        ) if not ok]
        if self.method is not None and self.map != DEFAULT_MAP:
            problems.append(f"method {self.method!r} and map {self.map.key!r} both name the map scored: give one")
        if problems:
            raise ValueError("; ".join(problems))
        _ = self.scoring, self.scored  # resolved once, now: an unknown pool kind or method fails here, before any work

    @cached_property
    def scoring(self) -> ScoringPool:
        return ScoringPool.of(self.pool, self.threads)

    @cached_property
    def scored(self) -> methods.Method:
        """The method scored: ``method`` by name, else ``map``'s own. One with a ``spec`` is scored as
        that map of the explanation, exactly as ``map`` would be, with the other variants and layer
        counts beside it; any other is run on each batch for the GT and top-1 classes' maps alone."""
        return methods.get(self.method) if self.method is not None else methods.tscam.from_spec(self.map)

    @property
    def uses_graph(self) -> bool:
        """Whether the explain pass runs as the traced graph: asked for, and its maps are the ones scored
        (another method runs its own passes eagerly; the explain pass then only classifies)."""
        return self.graph and self.scored.spec is not None


#: Usable cores from which ``pool="auto"`` scores in processes. Threads share the GIL, so they stop
#: scaling after a few; processes pay a fork each and a pickled batch. On a 16-core GPU machine a
#: fork pool scored deit_small faster than any thread pool (docs/scoring-pools.md); on 2 cores
#: threads do as well (docs/performance.md, section 5).
PROCESS_POOL_CORES = 8
#: Default size of a thread pool: past this, threads mostly wait for the GIL and one another.
THREAD_POOL_SIZE = 4


@dataclass(frozen=True)
class ScoringPool:
    """The kind and size of the scoring pool that ``EvalSettings.pool`` and ``threads`` resolve to."""

    kind: Literal["thread", "process"]
    workers: int

    @classmethod
    def of(cls, pool: str, threads: int | None) -> ScoringPool:
        cores = usable_cores()
        if pool == "auto":
            pool = "process" if cores >= PROCESS_POOL_CORES and can_fork() else "thread"
        if pool not in ("thread", "process"):
            raise ValueError(f"pool must be 'auto', 'thread' or 'process', got {pool!r}")
        if threads is None:  # processes: a core each but the model's; threads: a few
            threads = max(1, cores - 1) if pool == "process" else min(THREAD_POOL_SIZE, cores)
        return cls(pool, max(1, threads))


def usable_cores() -> int:
    """The cores this process may run on (its affinity), where the OS says; else all of them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def can_fork() -> bool:
    """Linux only: forking is what makes processes cheap to start, and elsewhere it is not safe."""
    return sys.platform.startswith("linux")
