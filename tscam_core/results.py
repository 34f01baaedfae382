"""The evaluation results folder (docs/results-format.md): written once by the evaluation, read by everyone else.

Stable API, used by the dashboard and the docs script:

    results = load_results("results/fashion")     # raises ResultsError naming what is wrong
    results.parsed                                  # the typed, checked summary (tscam_core.summary.Summary)
    results.name, results.summary, results.metrics  # dicts straight from summary.json
    results.per_image                               # pandas DataFrame, read on first access, then cached
    results.thumbnail_path("img_001")               # Path of that image's PNG, or None
    results.thumbnails()                            # {image_id: Path} for every thumbnail on disk
    folder_in_root("run_a", root)                   # a visitor's path, refused outside the root (hosting)

    write_results(path, summary, rows)              # rows: a DataFrame or a list of row dicts

``summary.json`` is written last, so a folder without it is an evaluation that did not finish.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ResultsError
from .files import atomic_write
from .summary import CRITERIA, REQUIRED_METRICS, SUMMARY_FILE, Summary, parse_summary

FORMAT_NAME = "tscam-results"
#: 3: settings.method records the localization method scored (a method other than a map of the
#: explanation has no variant, layer count or map keys). 2: scored with the reference codes'
#: conventions (tscam_core.metrics, tscam_core.overlaps) and settings.box_convention recorded; still
#: read, as runs of their map's own method. Version 1 folders counted box pixels half-open and are
#: read no more: re-run the evaluation.
FORMAT_VERSION = 3
#: The versions ``load_results`` reads, oldest first.
READABLE_VERSIONS = (2, 3)
TABLE_FILE = "per_image.parquet"
THUMBNAIL_DIR = "thumbnails"
#: Where an evaluation draws its thumbnails until it has scored every image.
PARTIAL_THUMBNAIL_DIR = ".thumbnails.partial"

REQUIRED_SUMMARY = ("name", "checkpoint", "dataset", "settings", "metrics", "versions")
REQUIRED_COLUMNS = (
    "image_id", "image_path", "gt_class", "gt_boxes", "width", "height", "top5_classes", "top5_scores",
    "pred_box", "gt_known_box", "iou", "iog", "iop", "gt_known_iou", "error_type", "correct_cls",
    *CRITERIA, "thumbnail",
)


def thumbnail_name(image_id: str) -> str:
    """The PNG file name of an image's thumbnail: the id with anything but letters, digits, '.-_' as '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(image_id)) + ".png"


class Results:
    """One evaluation run on disk. The per-image table is read lazily: the summary alone is cheap.

    ``parsed`` is the summary checked and typed; ``summary`` the same file as a plain dict, for the
    readers that have not moved to ``parsed`` yet.
    """

    def __init__(self, path: Path, summary: dict[str, Any], parsed: Summary) -> None:
        self.path = path
        self.summary = summary
        self.parsed = parsed

    @property
    def name(self) -> str:
        return self.parsed.name

    @property
    def metrics(self) -> dict[str, Any]:
        return self.summary["metrics"]

    @cached_property
    def per_image(self) -> pd.DataFrame:
        try:
            return pd.read_parquet(self.path / TABLE_FILE)
        except (OSError, ValueError) as error:
            raise ResultsError(f"{TABLE_FILE} cannot be read ({error})", self.path) from error

    def thumbnail_path(self, image_id: str) -> Path | None:
        path = self.path / THUMBNAIL_DIR / thumbnail_name(image_id)
        return path if path.is_file() else None

    def thumbnails(self) -> dict[str, Path]:
        folder = self.path / THUMBNAIL_DIR
        if not folder.is_dir():
            return {}
        on_disk = {p.name: p for p in folder.glob("*.png")}
        ids = self.per_image["image_id"].tolist()
        return {image_id: on_disk[thumbnail_name(image_id)] for image_id in ids if thumbnail_name(image_id) in on_disk}

    def __repr__(self) -> str:
        return f"Results({str(self.path)!r}, {self.parsed.dataset.num_images} images)"


def load_results(path: str | Path) -> Results:
    """Open a results folder, checking format, version and completeness before anything is shown."""
    path = Path(path)
    if not path.is_dir():
        raise ResultsError("no such results folder", path)
    summary_path = path / SUMMARY_FILE
    if not summary_path.is_file():
        unfinished = any((path / name).exists() for name in (THUMBNAIL_DIR, PARTIAL_THUMBNAIL_DIR, TABLE_FILE))
        hint = "the evaluation did not finish" if unfinished else "not a results folder"
        raise ResultsError(f"no {SUMMARY_FILE} ({hint}; re-run python -m tscam_core.evaluate)", path)
    summary, parsed = read_summary(summary_path)
    table = path / TABLE_FILE
    if not table.is_file():
        raise ResultsError(f"{TABLE_FILE} is missing: the folder is incomplete", path)
    check_table(table, parsed.dataset.num_images, path)
    return Results(path, summary, parsed)


def folder_in_root(given: str | Path, root: Path) -> Path:
    """The folder ``given`` names (relative: to ``root``), if it lies inside ``root`` once symlinks and
    '..' are resolved. Anything else gets the same ResultsError whether or not it exists, so a visitor
    who types paths learns nothing about the machine's folders outside the root. No '~' expansion:
    it would tell which user names exist."""
    root = root.resolve()
    try:
        path = (root / given).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte: no folder to serve either way
        path = None
    if path is None or not path.is_relative_to(root):
        raise ResultsError("outside the results root this dashboard serves", given)
    return path


def read_summary(summary_path: Path) -> tuple[dict[str, Any], Summary]:
    """summary.json as stored and as checked against the documented format, every field's type included."""
    folder = summary_path.parent
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:  # RecursionError: nested too deep
        raise ResultsError(f"{SUMMARY_FILE} is not valid JSON ({error}); the file is damaged", folder) from error
    if not isinstance(summary, dict) or summary.get("format") != FORMAT_NAME:
        raise ResultsError(f"{SUMMARY_FILE} is not a tscam results summary (no format '{FORMAT_NAME}')", folder)
    version = summary.get("format_version")
    if version not in READABLE_VERSIONS:
        age = "an older" if isinstance(version, int) and version < READABLE_VERSIONS[0] else "another"
        readable = " and ".join(map(str, READABLE_VERSIONS))
        raise ResultsError(f"results format version {version} is {age} format; this tscam reads versions "
                           f"{readable}: re-run python -m tscam_core.evaluate", folder)
    missing = [key for key in REQUIRED_SUMMARY if key not in summary]
    metrics = summary.get("metrics")
    missing += [f"metrics.{key}" for key in REQUIRED_METRICS if isinstance(metrics, dict) and key not in metrics]
    if missing:
        raise ResultsError(f"{SUMMARY_FILE} lacks {', '.join(missing)}", folder)
    return summary, parse_summary(summary, folder)


def check_table(table: Path, expected: int, folder: Path) -> None:
    """Columns and row count from the Parquet footer only, so loading stays cheap."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(table)
        columns = set(metadata.schema.to_arrow_schema().names)
    except (OSError, ValueError) as error:
        raise ResultsError(f"{TABLE_FILE} is damaged ({error})", folder) from error
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ResultsError(f"{TABLE_FILE} lacks the columns {', '.join(missing)}", folder)
    if metadata.num_rows != expected:
        raise ResultsError(f"{TABLE_FILE} has {metadata.num_rows} rows but the summary counts {expected} images: "
                           "the folder is incomplete", folder)


def write_results(path: str | Path, summary: dict[str, Any], rows: pd.DataFrame | Sequence[dict]) -> Results:
    """Write the table, then the summary (with format and version), each atomically; returns the loaded view."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    table = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=_columns(rows))
    summary = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **summary}
    atomic_write(path / TABLE_FILE, lambda temporary: table.to_parquet(temporary, index=False))
    atomic_write(path / SUMMARY_FILE,
                 lambda temporary: Path(temporary).write_text(json.dumps(plain(summary), indent=1), encoding="utf-8"))
    return load_results(path)


def plain(value: Any) -> Any:
    """JSON-safe: numpy scalars and arrays to Python, NaN and infinities to null (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _columns(rows: Sequence[dict]) -> list[str] | None:
    return None if rows else list(REQUIRED_COLUMNS)
