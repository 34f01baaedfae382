"""Side-by-side timing, peak memory and the machine's description, shared by every benchmark.

Absolute times drift on a shared machine, so candidates are timed interleaved (A B A B ...)
after a warm-up and compared by the median of their per-repetition ratios. Peak memory is
what a call allocates on top of what already existed (weights, inputs).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import torch
from PIL import Image

from tscam_core.evaluate import usable_cores

CPU_MEMORY_METHOD = (
    "torch.profiler(profile_memory=True): every allocation and free of torch's CPU allocator during "
    "the call, summed in time order; peak = highest running total (memory allocated outside torch's "
    "allocator, e.g. oneDNN scratch buffers, is not seen)"
)
CUDA_MEMORY_METHOD = "torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus the memory allocated before the call"
TIMING_METHOD = (
    "wall clock, candidates interleaved (A B A B ...) after warm-up; ratio = median over repetitions "
    "of the per-repetition ratio; absolute times are medians"
)


def memory_method(device: torch.device) -> str:
    return CUDA_MEMORY_METHOD if device.type == "cuda" else CPU_MEMORY_METHOD


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timings:
    """Seconds per repetition for each candidate, repetitions aligned across candidates."""

    seconds: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median of the per-repetition ratios: robust to load that drifts during the run."""
        pairs = zip(self.seconds[numerator], self.seconds[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)


def time_interleaved(
    candidates: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: torch.device,
    warm: Sequence[str] | None = None,
) -> Timings:
    """Run every candidate once per round, ``warmup`` untimed rounds then ``repeats`` timed ones.

    ``warm`` names the candidates the warm-up runs (default: all); one that only repeats
    another's work (GradCAM top-5 is top-1 five times) need not pay for its own warm-up.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for _ in range(warmup):
        for name in candidates if warm is None else warm:
            candidates[name]()
    synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return Timings(seconds)


def peak_memory(run: Callable[[], Any], device: torch.device) -> int:
    """Bytes allocated at the call's peak beyond what was allocated before it."""
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return _cpu_peak_memory(run)


def _cpu_peak_memory(run: Callable[[], Any]) -> int:
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        run()
    changes: list[tuple[int, int]] = []
    pending = list(profiler.profiler.kineto_results.experimental_event_tree())
    while pending:
        node = pending.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            changes.append((node.start_time_ns, node.extra_fields.alloc_size))
        pending.extend(node.children)
    if not changes:
        raise RuntimeError("the profiler recorded no CPU allocation; peak memory cannot be measured")
    live = peak = 0
    for _, size in sorted(changes, key=lambda change: change[0]):
        live += size
        peak = max(peak, live)
    return peak


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence kineto's C++ start/stop log lines, written straight to file descriptor 2."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def machine_description(device: torch.device) -> dict[str, Any]:
    """What the figures depend on: processor, cores, threads, load and library versions."""
    description: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "device": str(device),
        "versions": {name: _version(name) for name in ("torch", "timm", "grad-cam")},
    }
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
    return description


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Budget:
    """How hard to measure: the device, timed repetitions and untimed warm-up rounds."""

    device: torch.device
    repeats: int
    warmup: int


def random_images(batch: int, size: tuple[int, int], device: torch.device, seed: int = 0) -> torch.Tensor:
    """A fixed random batch: timings need realistic shapes, not realistic pixels."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=generator).to(device)


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image (colour ramps plus noise): it encodes and decodes like a JPEG photo, not like noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * rng.uniform(0.3, 1.0, 3)
    pixels = np.clip(ramp + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def mebibytes(count: int) -> str:
    """Bytes for a table cell; small peaks in KiB so that they never read as 0.0."""
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 2**10:.1f} KiB"


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"
