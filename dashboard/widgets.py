"""Pieces the pages share: the no-run message, thumbnails and the paged thumbnail grid."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image

from dashboard.runs import Run
from tscam_core.dashboard_data import page_count, page_rows, read_thumbnail, thumbnail_boxes, thumbnail_file
from tscam_core.errors import ImageError
from tscam_core.images import load_image
from tscam_core.overlay import overlay
from tscam_core.summary import ERROR_LABELS

PER_PAGE_CHOICES = (12, 24, 48)
COLUMNS = 4


def require_runs(minimum: int = 1) -> dict[str, Run]:
    """The loaded runs, or a message saying what to do and the end of this page's run."""
    loaded: dict[str, Run] = st.session_state.get("runs", {})
    if len(loaded) < minimum:
        wanted = "a results folder" if minimum == 1 else f"{minimum} results folders"
        st.info(f"Pick {wanted} in the sidebar (or start with `-- --results DIR ...`). "
                "Make one with `python -m tscam_core.evaluate --checkpoint CKPT --dataset DIR --out results/NAME`.")
        st.stop()
    return loaded


@st.cache_data(max_entries=256, show_spinner=False)
def _drawn(path: str, boxes: tuple[tuple[float, ...], ...], predicted: tuple[float, ...]) -> Image.Image:
    image = load_image(path)
    width = image.width
    image.thumbnail((256, 256))
    scale = image.width / width
    row = {"gt_boxes": [[v * scale for v in b] for b in boxes], "pred_box": [v * scale for v in predicted]}
    return overlay(image, None, thumbnail_boxes(row))


@st.cache_data(max_entries=512, show_spinner=False)
def _stored(path: str, stamp: float) -> tuple[Image.Image, str | None]:
    return read_thumbnail(Path(path))


def thumbnail(run: Run, row: dict) -> tuple[Image.Image | None, str | None]:
    """The evaluation's thumbnail (a placeholder when it is damaged), else the dataset image with its
    boxes drawn, else no picture; with the one-line problem to show under it, if any."""
    stored = thumbnail_file(run.path, row["thumbnail"])
    if stored is not None:
        return _stored(str(stored), stored.stat().st_mtime)
    path = run.image_file(row["image_path"])
    if not path.is_file():
        return None, "(no thumbnail and no dataset image)"
    try:
        return _drawn(str(path), tuple(tuple(map(float, b)) for b in row["gt_boxes"]),
                      tuple(map(float, row["pred_box"]))), None
    except (ImageError, OSError):
        return None, "(no thumbnail, and the dataset image cannot be read)"


def caption(row: dict) -> str:
    return (f"**{row['image_id']}** · {row['gt_name']} → {row['pred_name']} ({row['confidence']:.0%}) · "
            f"IoU {row['iou']:.2f} · {ERROR_LABELS.get(row['error_type'], row['error_type'])}")


def paged(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """The rows of the page the user is on; the per-page and page controls are drawn here."""
    left, right = st.columns([1, 4], vertical_alignment="bottom")
    per_page = left.selectbox("Per page", PER_PAGE_CHOICES, key=f"{key}_per_page")
    with right:
        page = st.pagination(page_count(len(frame), per_page), key=f"{key}_page")
    return page_rows(frame, page, per_page)


def grid(run: Run, rows: pd.DataFrame, key: str, on_open: Callable[[str], None] | None = None) -> None:
    """Thumbnails, ``COLUMNS`` a row, each captioned, with a Details button when ``on_open`` is given."""
    records = rows.to_dict("records")
    for start in range(0, len(records), COLUMNS):
        for column, row in zip(st.columns(COLUMNS), records[start:start + COLUMNS], strict=False):
            with column:
                picture, problem = thumbnail(run, row)
                if picture is not None:
                    st.image(picture, width="stretch", output_format="PNG")
                if problem is not None:
                    st.caption(problem)
                st.markdown(caption(row))
                if on_open is not None:
                    st.button("Details", key=f"{key}_open_{row['image_id']}", on_click=on_open,
                              args=(row["image_id"],))
