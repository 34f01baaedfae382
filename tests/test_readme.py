"""The README's Python example runs as written, from the repository root, on the shipped checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_example_runs_and_boxes_the_example(monkeypatch, capsys):
    [example] = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    monkeypatch.chdir(ROOT)
    names: dict = {}
    exec(compile(example, "README.md", "exec"), names)
    x0, y0, x1, y1 = (float(v) for v in capsys.readouterr().out.strip(" []\n").split())
    width, height = names["image"].size
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    depth = names["model"].depth
    assert names["a_star"].shape[1:] == names["m_c"].shape[2:] and depth >= 4
    assert np.isfinite(names["m_c"].numpy()).all()
