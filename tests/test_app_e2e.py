"""`python app.py` launched on 127.0.0.1 and driven with gradio_client, as a remote user would."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import make_tiny_model, tiny_info
from gradio_client import Client, handle_file

from scripts.load_test import AppProcess
from tscam_core import save_checkpoint
from tscam_core.testing.bad_files import noise

pytestmark = pytest.mark.slow

NAMES = ["shirt", "shoe", "bag", "dress", "coat"]
CONTROLS = {"layer_mode": "last", "layer_count": 2, "threshold": 0.1, "method": "tscam", "opacity": 0.5,
            "colormap": "jet"}


def make_site(folder: Path, depth: int = 2) -> tuple[Path, Path]:
    """A tiny checkpoint with class names, and an examples folder with one example and its GT box."""
    model = make_tiny_model(depth=depth)
    info = dataclasses.replace(tiny_info(depth=depth), class_names=list(NAMES))
    checkpoint = save_checkpoint(model, info, folder / "tiny.safetensors")
    examples = folder / "examples"
    examples.mkdir()
    noise(64, 48, seed=7).save(examples / "bag.png")
    (examples / "examples.json").write_text(
        json.dumps(
            {
                "examples": [
                    {"file": "bag.png", "class_index": 2, "class_name": "bag", "boxes": [[8, 6, 40, 30]]}
                ]
            }
        )
    )
    return checkpoint, examples


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    checkpoint, examples = make_site(folder)
    with AppProcess(checkpoint, examples) as running:
        running.folder = folder
        running.examples = examples
        yield running


@pytest.fixture
def client(server):
    return Client(server.url, verbose=False, download_files=False)


def picture(folder: Path, name: str, size=(90, 60), seed=0) -> str:
    path = folder / name
    noise(*size, seed=seed).save(path)
    return str(path)


def analyze(client, path: str) -> tuple:
    return client.predict(image=handle_file(path), **CONTROLS, api_name="/analyze")


def test_upload_threshold_and_class_changes(server, client):
    dropdown, top5, prediction, a_star, s_c, m_c, gallery, record, status = analyze(
        client, picture(server.folder, "upload.png")
    )
    assert record["image"] == {"name": "upload.png", "width": 90, "height": 60}
    assert record["model"]["source"] == "tiny.safetensors"  # no server directories in the page
    assert len(top5["confidences"]) == 5 and top5["label"] == record["prediction"]["class_name"]
    assert dropdown["value"] == record["prediction"]["class_index"] and len(dropdown["choices"]) == 5
    for view in (prediction, a_star, s_c, m_c):
        assert view["path"].endswith(".jpeg")
    assert [item["caption"] for item in gallery] == ["block 1 · in A*", "block 2 · in A*"]
    assert "upload.png" in status

    boxes = set()
    for threshold in (0.0, 0.5, 0.95):
        view, moved = client.predict(**(CONTROLS | {"threshold": threshold}), api_name="/redraw_box")
        assert moved["settings"]["threshold"] == threshold and moved["image"]["name"] == "upload.png"
        boxes.add(tuple(moved["prediction"]["box"]))
    assert len(boxes) > 1

    other = top5["confidences"][1]["label"]
    index = NAMES.index(other)
    changes = {"layer_mode": "first", "layer_count": 1, "threshold": 0.3, "method": "trans_cam", "colormap": "viridis"}
    *_, gallery, changed = client.predict(chosen_class=index, **(CONTROLS | changes), api_name="/redraw")
    assert changed["prediction"]["class_name"] == other and changed["settings"]["blocks"] == [1]
    assert [item["caption"] for item in gallery] == ["block 1 · in A*", "block 2"]

    by_name = client.predict(chosen_class=other, **(CONTROLS | changes), api_name="/redraw")[-1]
    assert by_name["prediction"] == changed["prediction"]
    png, exported = client.predict(chosen_class=index, **(CONTROLS | changes), api_name="/export")
    assert png["path"].endswith("upload-tscam.png") and exported["path"].endswith("upload-tscam.json")


def test_bad_upload_is_reported_and_the_server_keeps_serving(server, client):
    analyze(client, picture(server.folder, "good.png", seed=1))
    bad = server.folder / "fake.jpg"
    bad.write_text("<html>not an image</html>")
    with pytest.raises(Exception, match="fake.jpg: .*not an image") as caught:
        analyze(client, str(bad))
    assert type(caught.value).__name__ == "AppError"
    # The session still holds its last good image, and the server answers everyone.
    assert client.predict(**CONTROLS, api_name="/redraw_box")[1]["image"]["name"] == "good.png"
    fresh = Client(server.url, verbose=False, download_files=False)
    assert analyze(fresh, picture(server.folder, "after.png", seed=2))[-2]["image"]["name"] == "after.png"
    assert server.process.poll() is None


def test_an_example_shows_its_ground_truth(server, client):
    record = analyze(client, str(server.examples / "bag.png"))[-2]
    truth = record["ground_truth"]
    assert truth["class_name"] == "bag" and truth["boxes"] == [[8, 6, 40, 30]]
    assert 0.0 <= truth["iou"] <= 1.0


def test_sessions_do_not_see_each_other(server):
    users = [Client(server.url, verbose=False, download_files=False) for _ in range(2)]
    for number, user in enumerate(users):
        analyze(user, picture(server.folder, f"user{number}.png", size=(40 + 20 * number, 40), seed=number))
    for number, user in enumerate(users):
        record = user.predict(**CONTROLS, api_name="/redraw_box")[1]
        assert record["image"] == {"name": f"user{number}.png", "width": 40 + 20 * number, "height": 40}


def test_every_endpoint_names_its_parameters(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/analyze", "/choose_model", "/redraw", "/redraw_box", "/export", "/explain_image"} <= set(endpoints)
    for name, endpoint in endpoints.items():
        names = [parameter["parameter_name"] for parameter in endpoint["parameters"]]
        assert not any(n.startswith("param_") for n in names), (name, names)
    redraw = {p["parameter_name"]: p for p in endpoints["/redraw"]["parameters"]}
    assert redraw["chosen_class"]["python_type"]["type"] == "str | int | None"


def test_redraw_in_a_fresh_session_says_what_to_do(server):
    fresh = Client(server.url, verbose=False, download_files=False)
    with pytest.raises(Exception, match="No image in this session.*call /analyze first"):
        fresh.predict(**CONTROLS, api_name="/redraw")


def test_the_documented_gradio_client_example_runs(server, tmp_path, monkeypatch, capsys):
    """docs/demo.md's example, as written, with only the server's address changed."""
    code = api_example()
    assert DOCS_URL in code
    monkeypatch.chdir(ROOT)
    exec(compile(code.replace(DOCS_URL, server.url), "docs/demo.md", "exec"), {})
    printed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("Loaded as API")]
    assert printed[0].split(": ")[0] in NAMES  # "<class>: <score>, box [x0, y0, x1, y1]"
    assert printed[1].startswith("M_c: 4 x 4") and printed[2].split(": ")[0] in NAMES


ROOT = Path(__file__).resolve().parents[1]
DOCS_URL = "http://127.0.0.1:7860/"


def api_example() -> str:
    """The python block that follows the ``<!-- api-example -->`` marker in docs/demo.md."""
    text = (ROOT / "docs" / "demo.md").read_text(encoding="utf-8")
    after = text.split("<!-- api-example -->", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]
