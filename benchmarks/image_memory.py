"""Peak memory of ``load_image`` per kind of file, beside the bound ``tscam_core.images`` states.

    python benchmarks/image_memory.py [--side 6300]

Each file is a ``side`` x ``side`` image (small on disk: a flat colour or a ramp compresses well)
loaded in a forked child (``tscam_core.testing.image_memory``); the peak is the growth of the
child's resident peak (VmHWM) over its resident size before the load. Linux only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tscam_core.testing.image_memory import KINDS, PIXEL_BYTES, load_peak

MIB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=6300, help="width and height of every file, in pixels")
    side = parser.parse_args().side
    pixels = side * side
    print(f"load_image on {side} x {side} files: peak resident growth (MiB) beside the stated bound")
    print(f"{'kind':<26}{'file KiB':>10}{'decoded':>10}{'peak':>8}{'bound':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for kind in KINDS.values():
            path, peak = load_peak(kind, Path(folder), side)
            print(f"{kind.name:<26}{path.stat().st_size / 1024:>10.0f}{pixels * PIXEL_BYTES[kind.mode] / MIB:>10.0f}"
                  f"{peak / MIB:>8.0f}{kind.bound(pixels) / MIB:>8.0f}")
            path.unlink()


if __name__ == "__main__":
    main()
