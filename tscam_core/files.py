"""Files written whole or not at all (what a crash or a kill may never leave half-written), and read
whole for their identity."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(target: str | Path, write: Callable[[str], object]) -> Path:
    """``write(temporary)`` into a file beside ``target``, then rename it over ``target``.

    A crash leaves the old file intact (and no temporary behind, unless the process is killed).
    The new file gets the mode a plain ``open`` would give it, 0666 less the umask, rather than
    the 0600 of ``mkstemp``: other users may read checkpoints and results as they read any file.
    """
    target = Path(target)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256, read in 1 MiB chunks: a checkpoint's identity in summary.json."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
