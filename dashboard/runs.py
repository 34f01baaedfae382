"""Which results folders the dashboard shows, and reading them once (cached) into ``Run`` objects.

A hosted dashboard is confined to one results root (``--results-root DIR`` or ``$TSCAM_RESULTS_ROOT``):
every folder a visitor types or the command line names must lie inside it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from tscam_core.dashboard_data import prepare_images
from tscam_core.errors import TSCAMError
from tscam_core.results import SUMMARY_FILE, TABLE_FILE, folder_in_root, load_results
from tscam_core.summary import Summary

ROOT = Path(__file__).resolve().parent.parent
RESULTS_ROOT = ROOT / "results"
SHIPPED_RUN = RESULTS_ROOT / "shipped-fashion"

#: The environment variable that confines the dashboard to a results root (``--results-root`` wins).
ROOT_VARIABLE = "TSCAM_RESULTS_ROOT"

#: What reading a folder can raise for a folder that is missing, partial or of another version.
READ_ERRORS = (TSCAMError, OSError, ValueError, KeyError, TypeError)


@dataclass(frozen=True)
class Options:
    """``streamlit run dashboard/app.py -- [--results DIR ...] [--results-root DIR]``."""

    folders: list[Path] | None  # None: not given, the app opens on the shipped run
    root: Path | None  # None: any folder may be opened (a dashboard on one's own machine)


def command_line(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> Options:
    """The options of the app's command line, the results root falling back to ``$TSCAM_RESULTS_ROOT``."""
    parser = argparse.ArgumentParser(prog="dashboard/app.py", add_help=False, allow_abbrev=False)
    parser.add_argument("--results", nargs="+", type=Path)
    parser.add_argument("--results-root", type=Path)
    known, _ = parser.parse_known_args(list(argv))
    root = known.results_root or (Path(environ[ROOT_VARIABLE]) if environ.get(ROOT_VARIABLE) else None)
    return Options(known.results, root)


def locate(given: str | Path, root: Path | None) -> Path:
    """The folder a visitor or the command line names: inside ``root`` when there is one (else the
    same refusal for any path, existing or not), otherwise as ``resolve`` finds it."""
    return resolve(given) if root is None else folder_in_root(given, root)


def serves(path: Path, root: Path | None) -> bool:
    """Whether ``locate`` accepts ``path``."""
    try:
        locate(path, root)
    except TSCAMError:
        return False
    return True


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
    summary: Summary
    images: pd.DataFrame

    @property
    def class_names(self) -> list[str]:
        return list(self.summary.checkpoint.class_names)

    def image_file(self, relative: str) -> Path:
        return resolve(Path(self.summary.dataset.path) / relative)

    @property
    def checkpoint(self) -> Path | None:
        source = self.summary.checkpoint.source
        return None if source is None else resolve(source)


def _stamp(path: Path) -> tuple[float, ...]:
    """Modification times of the folder's files, so a rewritten folder is read again."""
    return tuple(p.stat().st_mtime if p.exists() else -1.0 for p in (path / SUMMARY_FILE, path / TABLE_FILE))


#: A resource cache, not ``st.cache_data``: the latter hands every rerun an unpickled copy, which costs
#: about a second at 50,000 rows (scripts/dashboard_load_time.py); nothing here mutates the frame.
@st.cache_resource(show_spinner="Reading the results folder…", max_entries=16)
def _read(path: str, stamp: tuple[float, ...]) -> tuple[Summary, pd.DataFrame]:
    results = load_results(path)
    return results.parsed, prepare_images(results.per_image, results.parsed.checkpoint.class_names)


def load_run(path: Path) -> Run:
    """Read a folder (from the cache when unchanged); raises one of ``READ_ERRORS`` naming the problem."""
    summary, images = _read(str(path.resolve()), _stamp(path))
    return Run(summary.name or path.name, path, summary, images)


def load_runs(given: Sequence[str | Path], root: Path | None) -> tuple[dict[str, Run], list[str]]:
    """The runs that could be read, by unique name, and one message per folder that could not (one
    outside ``root`` among them)."""
    runs: dict[str, Run] = {}
    problems = []
    for folder in given:
        try:
            run = load_run(locate(folder, root))
        except READ_ERRORS as error:
            message = str(error)
            problems.append(message if str(folder) in message else f"{folder}: {message}")
            continue
        name, number = run.name, 2
        while name in runs:
            name, number = f"{run.name} ({number})", number + 1
        runs[name] = Run(name, run.path, run.summary, run.images)
    return runs, problems


def discovered_folders(root: Path | None) -> list[Path]:
    """Results folders right under ``root`` (or the repository's results/), for the picker."""
    folder = RESULTS_ROOT if root is None else root
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p / SUMMARY_FILE).is_file())
