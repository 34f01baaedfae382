"""Peak memory of ``load_image`` per kind of file, measured where Pillow's own allocations show.

tracemalloc sees only Python's allocations, not Pillow's image buffers, so each file is loaded in a
forked child whose resident peak (``VmHWM``, reset first through ``/proc/self/clear_refs``) is
compared with its resident size before the load. The file is written by another child: memory the
measuring process had freed but kept would hide what the load allocates. Linux only. Used by ``benchmarks/image_memory.py``
and by the test of the bound that ``tscam_core.images`` states.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..images import BAND_PIXELS, load_image

#: Bytes a pixel takes in Pillow's memory, by mode (RGB, LA and the 32-bit modes use 4).
PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "LA": 4, "RGB": 4, "RGBA": 4, "CMYK": 4, "I": 4, "F": 4}
#: Python, the allocator and the file's own bytes, on top of the images: a generous allowance.
MARGIN_BYTES = 48 * 2**20


@dataclass(frozen=True)
class Kind:
    """A kind of file: how to make a ``side`` x ``side`` one, and the mode Pillow decodes it to."""

    name: str
    mode: str
    make: Callable[[int], Image.Image]
    suffix: str
    save: dict

    def write(self, folder: Path, side: int) -> Path:
        path = folder / f"{self.name}_{side}{self.suffix}"
        self.make(side).save(path, **self.save)
        return path

    def bound(self, pixels: int) -> int:
        """What ``load_image`` may hold at its peak: the decoded image, the RGB result (none where the
        decoded image is RGB already), one band's float copy, and ``MARGIN_BYTES``."""
        result = 0 if self.mode == "RGB" else PIXEL_BYTES["RGB"]
        return pixels * (PIXEL_BYTES[self.mode] + result) + 8 * BAND_PIXELS + MARGIN_BYTES


def _ramp16(side: int) -> Image.Image:
    return Image.fromarray(np.tile(np.linspace(0, 65535, side).astype(np.uint16), (side, 1)))


KINDS = {kind.name: kind for kind in (
    Kind("gray16_png", "I;16", _ramp16, ".png", {}),
    Kind("gray8_png", "L", lambda side: Image.new("L", (side, side), 90), ".png", {}),
    Kind("rgb_png", "RGB", lambda side: Image.new("RGB", (side, side), (9, 99, 199)), ".png", {}),
    Kind("rgba_png", "RGBA", lambda side: Image.new("RGBA", (side, side), (9, 99, 199, 128)), ".png", {}),
    Kind("la_png", "LA", lambda side: Image.new("LA", (side, side), (90, 128)), ".png", {}),
    Kind("palette_transparent_png", "P", lambda side: Image.new("P", (side, side), 0), ".png", {"transparency": 0}),
    Kind("rgb_jpeg", "RGB", lambda side: Image.new("RGB", (side, side), (9, 99, 199)), ".jpg", {}),
    Kind("cmyk_jpeg", "CMYK", lambda side: Image.new("CMYK", (side, side), (200, 0, 0, 0)), ".jpg", {}),
    Kind("int32_tiff", "I", lambda side: Image.new("I", (side, side), 1000), ".tif", {"compression": "tiff_deflate"}),
    Kind("float_tiff", "F", lambda side: Image.new("F", (side, side), 0.5), ".tif", {"compression": "tiff_deflate"}),
)}


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {key} in /proc/self/status")


def _load_peak(path: str) -> int:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current resident size
    before = _status_bytes("VmRSS")
    image = load_image(path)
    peak = _status_bytes("VmHWM") - before
    del image
    return peak


def _write(name: str, folder: str, side: int) -> str:
    return str(KINDS[name].write(Path(folder), side))


def _fork() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))


def load_peak(kind: Kind, folder: Path, side: int) -> tuple[Path, int]:
    """A ``side`` x ``side`` file of ``kind`` written into ``folder``, and the bytes by which
    ``load_image`` of it raises a fresh child's resident peak."""
    with _fork() as writer:
        path = writer.submit(_write, kind.name, str(folder), side).result()
    with _fork() as child:
        return Path(path), child.submit(_load_peak, path).result()
