"""Write one script's section of a shared Markdown document, leaving the other sections alone.

A section lives between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; each script owns one
name, so several scripts can fill ``docs/reliability.md`` without overwriting each other.
"""

from __future__ import annotations

from pathlib import Path


def replace_section(path: str | Path, name: str, body: str, title: str = "") -> Path:
    """Put ``body`` between the ``name`` markers of ``path``, appending the markers (and file) if missing."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else (f"# {title}\n" if title else "")
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text and text.index(start) < text.index(end):
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
