"""Whether the paper's ordering of the maps shows on the benchmark (issue #17): TS-CAM's coupled map M_c
against its own attention A* (TransAttention) and its semantic map S_c (TransCAM), paired on the same
test images, said in a sentence the intervals decide; then the controlled study of training recipes
that looked for the ordering, as ``experiments/table.py`` wrote it into ``experiments/study.md``.
"""

from __future__ import annotations

from pathlib import Path

from ..intervals import Interval
from ..results import Results
from .columns import column_hits, paired
from .markdown import cell

#: The headings of the study's sections the page takes over: its setup, results and reading, not its title.
STUDY_SECTIONS = ("## Setup", "## Results", "## What it shows", "## Limits")


def verdict(difference: Interval, other: str) -> str:
    """How TS-CAM compares with ``other``, as far as the paired 95% interval can tell."""
    if difference.high < 0:
        return f"localizes **worse** than {other}"
    if difference.low > 0:
        return f"localizes **better** than {other}, as in the paper"
    return f"cannot be told apart from {other} on these images"


def study_sections(study: Path) -> list[str]:
    """The study's sections, one heading level down so they sit under this page's section; empty without the file."""
    if not study.is_file():
        return []
    lines, keep = [], False
    for line in study.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            keep = line.startswith(STUDY_SECTIONS)
        if keep:
            lines.append("#" + line if line.startswith(("## ", "### ")) else line)
    return lines


def ordering_section(tscam: Results, attention: Results, semantic: Results, study: Path) -> list[str]:
    """The section: the paired differences of this page's runs, the sentence they support, then the study."""
    gt_known = column_hits(tscam, "gt_known")
    to_attention = paired(gt_known, column_hits(attention, "gt_known"))
    to_semantic = paired(gt_known, column_hits(semantic, "gt_known"))
    lines = [
        "## Does the paper's ordering of the maps show? (issue #17)", "",
        "The paper's central claim (Table 5 on CUB: TransAttention 73, TransCAM 21, TS-CAM 87.8 GT-known Loc) is "
        "that coupling the semantic map S_c with the attention A* localizes better than either alone. On this "
        f"benchmark's test split, each map at its own threshold from the val split, TS-CAM (M_c) "
        f"{verdict(to_attention, 'its own attention A* alone (TransAttention)')}: GT-known Loc difference "
        f"{cell(to_attention)} points, paired on the same images; against S_c alone (TransCAM) it is "
        f"{cell(to_semantic)} points, so it {verdict(to_semantic, 'S_c alone')}.", "",
    ]
    if to_attention.high < 0:
        lines += ["So the ordering of the paper does not appear here: the demo and the dashboard open on the map "
                  "that localizes best on the checkpoint's validation images (`ModelInfo.best_map`), not on "
                  "TS-CAM's.", ""]
    sections = study_sections(study)
    if not sections:
        return lines + [f"The controlled study of recipes (`{study}`) is missing from this checkout."]
    return lines + [f"The controlled study that looked for the ordering across training recipes, one factor at a "
                    f"time on held-out images, from `{study}` (its tables written by `experiments/table.py`):", "",
                    *sections]
