"""Raw HTTP calls to the demo's queue API, as an attacker would send them (no gradio_client).

gradio_client always tags a file with FileData's meta and uploads it first; an attacker need
not. ``call`` speaks the queue's HTTP API directly (POST ``gradio_api/call/NAME``, then read the
event stream); ``server_paths`` makes the paths outside the upload cache that such a call may name.
Used by tests/test_app_uploads_only.py and by scripts/load_test.py's refusal table.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .bad_files import noise

#: The tag gradio_client puts on a file payload.
FILE_TAG = {"_type": "gradio.FileData"}


def call(url: str, payload: dict, controls: Sequence[object], api: str = "analyze") -> tuple[str, dict]:
    """The event stream's last event and its data, for ``api`` called with ``payload`` as the image."""
    body = json.dumps({"data": [payload, *controls]}).encode()
    request = urllib.request.Request(
        url + f"gradio_api/call/{api}", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(url + f"gradio_api/call/{api}/{event_id}", timeout=60) as response:
        lines = response.read().decode().strip().splitlines()
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    return events[-1], json.loads(data[-1])


def server_paths(folder: Path) -> dict[str, Path]:
    """Paths outside the upload cache: a readable image, secrets, nothing, and files that must never be read."""
    outside = folder / "outside"
    outside.mkdir(exist_ok=True)
    noise(60, 40, seed=3).save(outside / "photo.png")
    (outside / "a-folder").mkdir(exist_ok=True)
    fifo = outside / "pipe"
    if not fifo.exists():
        os.mkfifo(fifo)
    sparse = outside / "huge.png"
    with open(sparse, "wb") as file:
        file.truncate(8 * 2**30)  # 8 GiB that take no disk
    return {
        "image outside the project": outside / "photo.png",
        "/etc/shadow": Path("/etc/shadow"),
        "missing": outside / "missing.png",
        "directory": outside / "a-folder",
        "FIFO": fifo,
        "huge sparse file": sparse,
        "escape from the cache": Path(str(folder / "gradio-cache" / ".." / "outside" / "photo.png")),
    }


def untagged_payloads(folder: Path) -> dict[str, dict]:
    """Every untagged image payload the demo must refuse with one identical line."""
    payloads = {name: {"path": str(path)} for name, path in server_paths(folder).items()}
    payloads["a data URL"] = {"url": "data:image/png;base64,iVBORw0KGgo="}
    payloads["no path"] = {"orig_name": "x.png"}
    return payloads
