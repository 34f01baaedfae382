"""app.py's handlers called directly, on a tiny real model: what each event returns to the page."""

from __future__ import annotations

import dataclasses
import json

import gradio as gr
import numpy as np
import pytest
from conftest import make_tiny_model, tiny_info
from PIL import Image

import app
from tscam_core import CheckpointError, save_checkpoint
from tscam_core.explorer import DISPLAY_SIDE, ExplainedImage, Explorer
from tscam_core.testing.bad_files import noise

NAMES = ["shirt", "shoe", "bag", "dress", "coat"]
# layer_mode, layer_count, threshold, variant, opacity, colormap
CONTROLS = ("last", 2, 0.1, "tscam", 0.5, "jet")


@pytest.fixture
def model():
    model = make_tiny_model()
    model.info = dataclasses.replace(tiny_info(), class_names=list(NAMES))
    calls = []
    model.patch_embed.register_forward_pre_hook(lambda *_: calls.append(1))
    model.calls = calls
    return model


@pytest.fixture
def handlers(model, tmp_path) -> app.Handlers:
    return app.Handlers(Explorer(model), export_root=tmp_path / "exports")


@pytest.fixture
def photo(tmp_path) -> str:
    path = tmp_path / "photo.png"
    noise(120, 80, seed=4).save(path)
    return str(path)


def controls(class_index=None, **changes):
    names = ("layer_mode", "layer_count", "threshold", "variant", "opacity", "colormap")
    values = dict(zip(names, CONTROLS, strict=True)) | changes
    return (class_index, *(values[n] for n in names))


def test_analyze_returns_every_view(handlers, photo, model):
    state, dropdown, top5, prediction, a_star, s_c, m_c, gallery, record, status = handlers.analyze(
        photo, *CONTROLS
    )
    assert isinstance(state, ExplainedImage) and state.name == "photo.png"
    scores = [score for _, score in sorted(top5.items(), key=lambda kv: -kv[1])]
    assert (
        len(top5) == 5
        and scores == sorted(scores, reverse=True)
        and sum(scores) == pytest.approx(1, abs=1e-5)
    )
    assert [value for _, value in dropdown.choices][0] == dropdown.value == state.ranked_classes(1)[0].index
    assert len(dropdown.choices) == len(NAMES)
    for picture in (prediction, a_star, s_c, m_c):
        assert isinstance(picture, Image.Image) and max(picture.size) == DISPLAY_SIDE
    assert [caption.split(" ·")[0] for _, caption in gallery] == ["block 1", "block 2"]
    assert record["image"] == {"name": "photo.png", "width": 120, "height": 80}
    assert "photo.png" in status and "120x80" in status
    assert len(model.calls) == 1


def test_analyze_of_nothing_clears_the_page(handlers):
    state, dropdown, *views, status = handlers.analyze(None, *CONTROLS)
    assert state is None and dropdown.choices == [] and status == ""
    assert all(v in (None, []) for v in views)


def test_bad_upload_is_a_clear_error(handlers, tmp_path, model):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a picture")
    with pytest.raises(gr.Error, match="notes.jpg: .*not an image"):
        handlers.analyze(str(bad), *CONTROLS)
    truncated = tmp_path / "cut.png"
    data = tmp_path / "ok.png"
    noise(64, 64).save(data)
    truncated.write_bytes(data.read_bytes()[:300])
    with pytest.raises(gr.Error, match="cut.png"):
        handlers.analyze(str(truncated), *CONTROLS)
    assert model.calls == []


def test_converted_upload_says_so_in_the_status(handlers, tmp_path):
    cmyk = tmp_path / "print.jpg"
    noise(50, 50).convert("CMYK").save(cmyk)
    with pytest.warns(UserWarning, match="CMYK"):  # gr.Warning outside a running page
        status = handlers.analyze(str(cmyk), *CONTROLS)[-1]
    assert "CMYK" in status


def test_threshold_moves_only_the_box_without_a_forward_pass(handlers, photo, model):
    state = handlers.analyze(photo, *CONTROLS)[0]
    boxes = set()
    for threshold in (0.0, 0.5, 0.95):
        picture, record = handlers.redraw_box(state, *controls(threshold=threshold))
        assert record["settings"]["threshold"] == threshold
        assert isinstance(picture, Image.Image)
        boxes.add(tuple(record["prediction"]["box"]))
    assert len(boxes) > 1
    assert len(model.calls) == 1


def test_class_and_layer_changes_redraw_from_the_cache(handlers, photo, model):
    state = handlers.analyze(photo, *CONTROLS)[0]
    second = state.ranked_classes(2)[1].index
    prediction, a_star, s_c, m_c, gallery, record = handlers.redraw(
        state, *controls(class_index=second, layer_mode="first", layer_count=1, colormap="viridis")
    )
    assert record["prediction"]["class_index"] == second
    assert record["settings"]["blocks"] == [1]
    assert [caption for _, caption in gallery] == ["block 1 · in A*", "block 2"]
    top1 = handlers.redraw(state, *controls(layer_mode="first", layer_count=1, colormap="viridis"))
    assert not np.array_equal(np.asarray(top1[3]), np.asarray(m_c))  # M_c of another class
    assert np.array_equal(np.asarray(top1[1]), np.asarray(a_star))  # A* does not depend on the class
    assert len(model.calls) == 1


def test_invalid_settings_from_an_api_client_are_clear_errors(handlers, photo):
    state = handlers.analyze(photo, *CONTROLS)[0]
    with pytest.raises(gr.Error, match="outside 0..4"):
        handlers.redraw(state, *controls(class_index=7))
    with pytest.raises(gr.Error, match="colormap"):
        handlers.redraw_box(state, *controls(colormap="rainbow"))
    with pytest.raises(gr.Error, match="outside 1..2"):
        handlers.redraw(state, *controls(layer_count=9))


def test_redraw_before_any_upload_shows_nothing(handlers):
    with pytest.warns(UserWarning, match="Upload an image"):  # gr.Warning outside a running page
        assert handlers.redraw(None, *controls()) == (None, None, None, None, [], None)
    with pytest.warns(UserWarning, match="Upload an image"):
        assert handlers.redraw_box(None, *controls()) == (None, None)
    with pytest.raises(gr.Error, match="first"):
        handlers.export(None, *controls())


def test_export_writes_the_overlay_png_and_the_json(handlers, photo):
    state = handlers.analyze(photo, *CONTROLS)[0]
    png, record = handlers.export(state, *controls(threshold=0.3, colormap="magma"))
    assert png.endswith("photo-tscam.png") and record.endswith("photo-tscam.json")
    with Image.open(png) as picture:
        assert picture.size == state.display.size
    data = json.loads(open(record).read())
    assert data["settings"]["threshold"] == 0.3 and data["settings"]["colormap"] == "magma"
    assert (
        data["prediction"]["box"]
        == handlers.redraw_box(state, *controls(threshold=0.3))[1]["prediction"]["box"]
    )


def test_sessions_keep_their_own_image(handlers, tmp_path):
    states = []
    for index, size in enumerate(((40, 30), (70, 50))):
        path = tmp_path / f"user{index}.png"
        noise(*size, seed=index).save(path)
        states.append(handlers.analyze(str(path), *CONTROLS)[0])
    for index, state in enumerate(states):
        record = handlers.redraw_box(state, *controls())[1]
        assert record["image"]["name"] == f"user{index}.png"


def test_the_page_has_the_documented_endpoints(model, tmp_path):
    demo = app.build_demo(Explorer(model))
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"analyze", "redraw", "redraw_box", "export"} <= names


def test_a_missing_checkpoint_stops_the_app_with_a_message(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        app.load_explorer(tmp_path / "missing.safetensors")
    with pytest.raises(SystemExit, match="--checkpoint"):
        app.main(["--checkpoint", str(tmp_path / "missing.safetensors")])


def test_load_explorer_skips_malformed_examples(model, tmp_path, capsys):
    checkpoint = save_checkpoint(model, model.info, tmp_path / "tiny.safetensors")
    (tmp_path / "examples.json").write_text('[{"file": 3}]')
    explorer = app.load_explorer(checkpoint, tmp_path)
    assert explorer.examples == [] and "examples skipped" in capsys.readouterr().err


def test_every_event_shares_one_concurrency_limit(model):
    """default_concurrency_limit is per listener: without one group, 4 listeners run 4 x 2 events at once."""
    demo = app.build_demo(Explorer(model))
    demo.queue(default_concurrency_limit=app.CONCURRENCY, max_size=app.QUEUE_SIZE)
    handled = [fn for fn in demo.fns.values() if fn.api_name in {"analyze", "redraw", "redraw_box", "export"}]
    assert len(handled) == 4
    assert len({fn.concurrency_id for fn in handled}) == 1
