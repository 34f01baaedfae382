"""Which results folders the dashboard shows, and reading them once (cached) into ``Run`` objects."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from tscam_core.dashboard_data import prepare_images
from tscam_core.errors import TSCAMError
from tscam_core.results import load_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS_ROOT = ROOT / "results"
SHIPPED_RUN = RESULTS_ROOT / "shipped-fashion"

#: What reading a folder can raise for a folder that is missing, partial or of another version.
READ_ERRORS = (TSCAMError, OSError, ValueError, KeyError, TypeError)


def command_line_folders(argv: Sequence[str]) -> list[Path] | None:
    """The folders of ``streamlit run dashboard/app.py -- --results DIR ...``; None when not given."""
    parser = argparse.ArgumentParser(prog="dashboard/app.py", add_help=False, allow_abbrev=False)
    parser.add_argument("--results", nargs="+", type=Path)
    known, _ = parser.parse_known_args(list(argv))
    return known.results


def resolve(path: str | Path) -> Path:
    """A path as given if it exists there, else relative to the repository (the Space's working tree)."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return ROOT / path if (ROOT / path).exists() else path


@dataclass(frozen=True)
class Run:
    """One results folder, read: its summary and its per-image table with the filter columns added."""

    name: str
    path: Path
    summary: dict
    images: pd.DataFrame

    @property
    def class_names(self) -> list[str]:
        return list(self.summary["checkpoint"]["class_names"])

    @property
    def thumbnails(self) -> Path:
        return self.path / "thumbnails"

    def image_file(self, relative: str) -> Path:
        return resolve(Path(self.summary["dataset"]["path"]) / relative)

    @property
    def checkpoint(self) -> Path:
        return resolve(self.summary["checkpoint"]["source"])


def _stamp(path: Path) -> tuple[float, ...]:
    """Modification times of the folder's files, so a rewritten folder is read again."""
    return tuple(p.stat().st_mtime if p.exists() else -1.0 for p in (path / "summary.json", path / "per_image.parquet"))


#: A resource cache, not ``st.cache_data``: the latter hands every rerun an unpickled copy, which costs
#: about a second at 50,000 rows (scripts/dashboard_load_time.py); nothing here mutates the frame.
@st.cache_resource(show_spinner="Reading the results folder…", max_entries=16)
def _read(path: str, stamp: tuple[float, ...]) -> tuple[dict, pd.DataFrame]:
    results = load_results(path)
    names = results.summary["checkpoint"]["class_names"]
    return results.summary, prepare_images(results.per_image, names)


def load_run(path: Path) -> Run:
    """Read a folder (from the cache when unchanged); raises one of ``READ_ERRORS`` naming the problem."""
    summary, images = _read(str(path.resolve()), _stamp(path))
    return Run(str(summary.get("name") or path.name), path, summary, images)


def load_runs(paths: Sequence[Path]) -> tuple[dict[str, Run], list[str]]:
    """The runs that could be read, by unique name, and one message per folder that could not."""
    runs: dict[str, Run] = {}
    problems = []
    for path in paths:
        try:
            run = load_run(path)
        except READ_ERRORS as error:
            message = str(error)
            problems.append(message if str(path) in message else f"{path}: {message}")
            continue
        name, number = run.name, 2
        while name in runs:
            name, number = f"{run.name} ({number})", number + 1
        runs[name] = Run(name, run.path, run.summary, run.images)
    return runs, problems


def discovered_folders() -> list[Path]:
    """Results folders under the repository's results/, for the picker."""
    if not RESULTS_ROOT.is_dir():
        return []
    return sorted(p for p in RESULTS_ROOT.iterdir() if (p / "summary.json").is_file())
