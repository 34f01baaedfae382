"""Errors that name what went wrong, so a user can fix the input rather than read a traceback."""

from __future__ import annotations

from pathlib import Path


class TSCAMError(Exception):
    """Base class of every error this library raises on bad input."""


class ImageError(TSCAMError, ValueError):
    """An image that cannot be used: not an image, truncated, too large, unreadable."""


class CheckpointError(TSCAMError, ValueError):
    """A checkpoint that cannot be loaded: wrong format, unsafe pickle, mismatching shapes."""


class DatasetError(TSCAMError, ValueError):
    """A dataset file with a problem; names the file and, where there is one, the line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class ResultsError(TSCAMError, ValueError):
    """A results folder that cannot be read; the message names the folder and what is missing or wrong."""

    def __init__(self, message: str, path: str | Path) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")
