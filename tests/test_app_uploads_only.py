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
from tscam_core.testing import raw_http
from tscam_core.testing.bad_files import noise
from tscam_core.testing.raw_http import FILE_TAG as TAG
from tscam_core.testing.raw_http import server_paths

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads-only")
    checkpoint, examples = make_site(folder)
    cache = folder / "gradio-cache"
    with AppProcess(checkpoint, examples, env={"GRADIO_TEMP_DIR": str(cache)}) as running:
        running.folder, running.cache = folder, cache
        yield running


ANALYZE = ("analyze", ("tiny.safetensors", *CONTROLS.values()))  # after the image: the model, the controls
EXPLAIN = ("explain_image", ("tiny.safetensors", "", "all", None, "tscam"))  # model, class, blocks, threshold, method


def call(server, payload: dict, endpoint: tuple[str, tuple] = ANALYZE) -> tuple[str, dict]:
    """The event stream's last event and its data, for an endpoint called with ``payload`` as the image."""
    name, rest = endpoint
    return raw_http.call(server.url, payload, rest, api=name)


def assert_no_reader(fifo: Path) -> None:
    """Nobody holds the FIFO open for reading: opening it to write without blocking fails with ENXIO."""
    with pytest.raises(OSError) as caught:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert caught.value.errno == errno.ENXIO


def test_untagged_server_paths_get_one_identical_refusal(server):
    answers = {name: call(server, payload) for name, payload in raw_http.untagged_payloads(server.folder).items()}
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
