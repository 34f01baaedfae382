"""Give the memory freed after a large image back to the system.

glibc's malloc keeps freed memory in its arenas (one per thread that allocated, up to 8 a
core) for reuse: a server whose worker threads each converted a 40-megapixel upload once
keeps hundreds of megabytes it no longer uses (issue 20: 2.8 GB after a mix of heavy
uploads). ``malloc_trim(0)`` hands the free pages of every arena back. Where the C library
has no ``malloc_trim`` (macOS, musl), nothing is done.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

#: Decoded images from this many pixels up release their memory once done with (16 MB as RGB).
RELEASE_PIXELS = 4_000_000


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)  # the symbols of the running process, its C library's among them
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def release_freed_memory() -> bool:
    """Return the C heap's free pages to the system; True where some memory was released."""
    trim = _malloc_trim()
    return bool(trim is not None and trim(0))
