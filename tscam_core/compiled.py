"""The one way the scoring's per-pixel loops are compiled (numba), wherever the package is installed.

``nogil`` lets scoring threads run the loops side by side. numba's on-disk cache saves the
compilation (seconds per loop) in every later process; where no cache location is writable (a
read-only install run without a home directory), numba refuses ``cache=True`` at import, so the
loops are compiled once per process instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numba

Function = TypeVar("Function", bound=Callable)


def compiled(function: Function) -> Function:
    """``numba.njit(nogil=True)``, cached on disk where numba can write its cache."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)
