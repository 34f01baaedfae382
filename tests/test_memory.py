"""A server keeps no memory for the large uploads it is done with (issue 20, section 5).

glibc keeps what a worker thread frees in that thread's arena; the explorer hands the free pages
back after a large image. Measured in a forked child (its resident size, from /proc), with the
image explained in a worker thread as Gradio does.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_model
from PIL import Image

from tscam_core import explorer as explorer_module
from tscam_core.explorer import Explorer
from tscam_core.memory import release_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def growth_after_explaining(path: str, release: bool) -> float:
    """MiB by which this (forked) process's resident size grew once ``path`` was explained, twice,
    in worker threads; with the release after large images switched on or off."""
    if not release:
        explorer_module.RELEASE_PIXELS = sys.maxsize
    explorer = Explorer(make_tiny_model())
    explorer.explain(path)  # the warm-up: first-call allocations are not what is measured
    release_freed_memory()
    before = resident_mib()
    for _ in range(2):
        worker = threading.Thread(target=explorer.explain, args=(path,))
        worker.start()
        worker.join()
    return resident_mib() - before


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("large") / "large.jpg"
    ramp = np.linspace(0, 255, 6000).astype(np.uint8)
    Image.fromarray(np.tile(ramp, (4000, 1))).convert("RGB").save(path)
    return path


def in_child(path: Path, release: bool) -> float:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as child:
        return child.submit(growth_after_explaining, str(path), release).result(timeout=120)


def test_memory_freed_after_a_large_image_goes_back_to_the_system(large_jpeg):
    # Decoding holds 6000 x 4000 x 4 bytes = 92 MiB; what stays afterwards is a few display-sized copies.
    assert in_child(large_jpeg, release=True) < 30
    # The measure sees the problem: without the release the freed decode stays resident.
    assert in_child(large_jpeg, release=False) > 60
