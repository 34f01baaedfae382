"""The demo opens only files Gradio stored from an upload: raw HTTP calls that name server paths.

gradio_client always tags a file with FileData's meta and uploads it first; an attacker need
not, so these tests speak the queue's HTTP API directly (POST /gradio_api/call/analyze, then
read the event stream), with and without the tag.
"""

from __future__ import annotations

import errno
import json
import os
import urllib.request
from pathlib import Path

import pytest
from test_app_e2e import CONTROLS, make_site

from app import MAX_UPLOAD_BYTES, NOT_UPLOADED
from scripts.load_test import AppProcess
from tscam_core.testing.bad_files import noise

pytestmark = pytest.mark.slow
TAG = {"_type": "gradio.FileData"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads-only")
    checkpoint, examples = make_site(folder)
    cache = folder / "gradio-cache"
    with AppProcess(checkpoint, examples, env={"GRADIO_TEMP_DIR": str(cache)}) as running:
        running.folder, running.cache = folder, cache
        yield running


ANALYZE = ("analyze", ("tiny.safetensors", *CONTROLS.values()))  # after the image: the model, the controls
EXPLAIN = ("explain_image", ("tiny.safetensors", "", "all", None, "tscam"))  # model, class, blocks, threshold, variant


def call(server, payload: dict, endpoint: tuple[str, tuple] = ANALYZE) -> tuple[str, dict]:
    """The event stream's last event and its data, for an endpoint called with ``payload`` as the image."""
    name, rest = endpoint
    body = json.dumps({"data": [payload, *rest]}).encode()
    request = urllib.request.Request(
        server.url + f"gradio_api/call/{name}", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(server.url + f"gradio_api/call/{name}/{event_id}", timeout=60) as response:
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


def assert_no_reader(fifo: Path) -> None:
    """Nobody holds the FIFO open for reading: opening it to write without blocking fails with ENXIO."""
    with pytest.raises(OSError) as caught:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert caught.value.errno == errno.ENXIO


def test_untagged_server_paths_get_one_identical_refusal(server):
    answers = {name: call(server, {"path": str(path)}) for name, path in server_paths(server.folder).items()}
    answers["a data URL"] = call(server, {"url": "data:image/png;base64,iVBORw0KGgo="})
    answers["no path"] = call(server, {"orig_name": "x.png"})
    for name, (event, data) in answers.items():
        assert event == "error", name
        assert data == {
            "error": NOT_UPLOADED, "duration": 10, "visible": True, "title": "This file cannot be used"
        }, name
    assert_no_reader(server.folder / "outside" / "pipe")
    log = server.log_tail(20_000)
    assert "Traceback" not in log
    assert log.count("refused: " + NOT_UPLOADED) == len(answers)


def test_tagged_server_paths_are_refused_by_gradio_whether_they_exist_or_not(server):
    paths = server_paths(server.folder)
    answers = {name: call(server, {"path": str(path), "meta": TAG}) for name, path in paths.items()}
    for name, (event, data) in answers.items():
        assert event == "error", name
        assert data["error"] == f"Cannot move {os.path.abspath(paths[name])} to the gradio cache dir because it was not uploaded by a user.", name
    assert_no_reader(server.folder / "outside" / "pipe")


def test_files_in_the_cache_are_checked_before_they_are_read(server):
    inside = server.cache / "planted"
    inside.mkdir(parents=True, exist_ok=True)
    fifo = inside / "pipe.png"
    if not fifo.exists():
        os.mkfifo(fifo)
    sparse = inside / "huge.png"
    with open(sparse, "wb") as file:
        file.truncate(MAX_UPLOAD_BYTES + 1)
    event, data = call(server, {"path": str(fifo)})
    assert event == "error" and data["error"] == f"no image file at {fifo}"
    assert_no_reader(fifo)
    event, data = call(server, {"path": str(sparse)})
    assert event == "error"
    assert data["error"] == f"{sparse} is {MAX_UPLOAD_BYTES + 1:,} bytes, over the file size limit of {MAX_UPLOAD_BYTES:,}"


def test_an_image_in_the_cache_is_explained(server):
    planted = server.cache / "planted"
    planted.mkdir(parents=True, exist_ok=True)
    noise(50, 40, seed=4).save(planted / "mine.png")
    event, data = call(server, {"path": str(planted / "mine.png"), "meta": TAG})
    assert event == "complete"
    assert data[-2]["image"] == {"name": "mine.png", "width": 50, "height": 40}


def test_an_example_is_explained_as_the_page_sends_it(server):
    """A click on an example sends the sample the page was configured with: a file in the cache."""
    with urllib.request.urlopen(server.url + "config", timeout=30) as response:
        config = json.load(response)
    (dataset,) = [c for c in config["components"] if c["type"] == "dataset"]
    (sample,) = dataset["props"]["samples"][0]
    assert Path(sample["path"]).is_relative_to(server.cache)
    event, data = call(server, sample)
    assert event == "complete"
    assert data[-2]["ground_truth"]["boxes"] == [[8, 6, 40, 30]]


def test_the_stateless_endpoint_opens_only_uploaded_files_too(server):
    for path in server_paths(server.folder).values():
        event, data = call(server, {"path": str(path)}, EXPLAIN)
        assert event == "error" and data["error"] == NOT_UPLOADED, path
    planted = server.cache / "planted"
    planted.mkdir(parents=True, exist_ok=True)
    noise(50, 40, seed=5).save(planted / "scripted.png")
    event, data = call(server, {"path": str(planted / "scripted.png"), "meta": TAG}, EXPLAIN)
    assert event == "complete" and data[0]["image"]["name"] == "scripted.png" and set(data[0]["maps"]) == {"A*", "S_c", "M_c"}
