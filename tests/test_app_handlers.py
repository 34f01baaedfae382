"""app.py's handlers called directly, on a tiny real model: what each event returns to the page, the method
picker's on-demand maps included."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import timm
import torch
from conftest import make_tiny_model, tiny_info
from PIL import Image

import app
from tscam_core import CheckpointError, save_checkpoint
from tscam_core.examples import ExampleSet
from tscam_core.explorer import DISPLAY_SIDE, ExplainedImage, Explorer
from tscam_core.explorer_methods import picker_choices
from tscam_core.model_zoo import IMAGENET_MODEL, ModelZoo
from tscam_core.testing.bad_files import noise

NAMES = ["shirt", "shoe", "bag", "dress", "coat"]
# layer_mode, layer_count, threshold, method, opacity, colormap
CONTROLS = ("last", 2, 0.1, "tscam", 0.5, "jet")


@pytest.fixture
def model():
    model = make_tiny_model()
    model.info = dataclasses.replace(tiny_info(), class_names=list(NAMES))
    calls = []
    model.patch_embed.register_forward_pre_hook(lambda *_: calls.append(1))
    model.calls = calls
    return model


def zoo_of(model) -> ModelZoo:
    """A zoo of one model, listed as "tiny"."""
    return ModelZoo(["tiny"], lambda _source: Explorer(model))


@pytest.fixture
def handlers(model, tmp_path) -> app.Handlers:
    return app.Handlers(zoo_of(model), export_root=tmp_path / "exports")


@pytest.fixture
def photo(tmp_path) -> str:
    path = tmp_path / "photo.png"
    noise(120, 80, seed=4).save(path)
    return str(path)


def controls(class_index=None, **changes):
    names = ("layer_mode", "layer_count", "threshold", "method", "opacity", "colormap")
    values = dict(zip(names, CONTROLS, strict=True)) | changes
    return (class_index, *(values[n] for n in names))


def test_analyze_returns_every_view(handlers, photo, model):
    state, dropdown, top5, prediction, a_star, s_c, m_c, gallery, record, status = handlers.analyze(
        photo, "tiny", *CONTROLS
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
    state, dropdown, *views, status = handlers.analyze(None, "tiny", *CONTROLS)
    assert state is None and dropdown.choices == [] and status == ""
    assert all(v in (None, []) for v in views)


def test_bad_upload_is_a_clear_error(handlers, tmp_path, model):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a picture")
    with pytest.raises(gr.Error, match="notes.jpg: .*not an image"):
        handlers.analyze(str(bad), "tiny", *CONTROLS)
    truncated = tmp_path / "cut.png"
    data = tmp_path / "ok.png"
    noise(64, 64).save(data)
    truncated.write_bytes(data.read_bytes()[:300])
    with pytest.raises(gr.Error, match="cut.png"):
        handlers.analyze(str(truncated), "tiny", *CONTROLS)
    assert model.calls == []


def test_converted_upload_says_so_in_the_status(handlers, tmp_path):
    cmyk = tmp_path / "print.jpg"
    noise(50, 50).convert("CMYK").save(cmyk)
    with pytest.warns(UserWarning, match="CMYK"):  # gr.Warning outside a running page
        status = handlers.analyze(str(cmyk), "tiny", *CONTROLS)[-1]
    assert "CMYK" in status


def test_threshold_moves_only_the_box_without_a_forward_pass(handlers, photo, model):
    state = handlers.analyze(photo, "tiny", *CONTROLS)[0]
    boxes = set()
    for threshold in (0.0, 0.5, 0.95):
        picture, record = handlers.redraw_box(state, *controls(threshold=threshold))
        assert record["settings"]["threshold"] == threshold
        assert isinstance(picture, Image.Image)
        boxes.add(tuple(record["prediction"]["box"]))
    assert len(boxes) > 1
    assert len(model.calls) == 1


def test_class_and_layer_changes_redraw_from_the_cache(handlers, photo, model):
    state = handlers.analyze(photo, "tiny", *CONTROLS)[0]
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
    state = handlers.analyze(photo, "tiny", *CONTROLS)[0]
    with pytest.raises(gr.Error, match="outside 0..4"):
        handlers.redraw(state, *controls(class_index=7))
    with pytest.raises(gr.Error, match="colormap"):
        handlers.redraw_box(state, *controls(colormap="rainbow"))
    with pytest.raises(gr.Error, match="outside 1..2"):
        handlers.redraw(state, *controls(layer_count=9))


def test_redraw_before_any_upload_says_what_to_do(handlers):
    for handler in (handlers.redraw, handlers.redraw_box, handlers.export):
        with pytest.raises(gr.Error, match="No image in this session.*call /analyze first.*/explain_image"):
            handler(None, *controls())


def test_export_writes_the_overlay_png_and_the_json(handlers, photo):
    state = handlers.analyze(photo, "tiny", *CONTROLS)[0]
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
        states.append(handlers.analyze(str(path), "tiny", *CONTROLS)[0])
    for index, state in enumerate(states):
        record = handlers.redraw_box(state, *controls())[1]
        assert record["image"]["name"] == f"user{index}.png"


def test_every_endpoint_is_documented_with_the_parameters_a_client_sees(model):
    """What gradio_client shows a script (the API info) is what docs/demo.md's endpoint table says:
    the same endpoints, each with the same named parameters, in order (none called param_N)."""
    demo = app.build_demo(zoo_of(model))
    served = {name.lstrip("/"): [p["parameter_name"] for p in endpoint["parameters"]]
              for name, endpoint in demo.get_api_info()["named_endpoints"].items()}
    table = (Path(app.__file__).parent / "docs" / "demo.md").read_text()
    documented = {}
    for row in re.findall(r"^\| (`/\w+`(?:, `/\w+`)*) \| (.*?) \|", table, flags=re.M):
        parameters = [name for name in re.findall(r"`(\w+)`", row[1])
                      if name not in ("all",)]
        for endpoint in re.findall(r"`/(\w+)`", row[0]):
            documented[endpoint] = parameters
    assert served == documented
    assert not any(name.startswith("param_") for parameters in served.values() for name in parameters)


def test_a_missing_checkpoint_stops_the_app_with_a_message(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        app.make_loader()(str(tmp_path / "missing.safetensors"))
    with pytest.raises(SystemExit, match="--checkpoint"):
        app.main(["--checkpoint", str(tmp_path / "missing.safetensors")])


def test_load_explorer_skips_malformed_examples(model, tmp_path, capsys):
    checkpoint = save_checkpoint(model, model.info, tmp_path / "tiny.safetensors")
    (tmp_path / "examples.json").write_text('[{"file": 3}]')
    explorer = app.make_loader(app.load_example_sets(tmp_path))(str(checkpoint))
    assert explorer.examples == [] and "examples skipped" in capsys.readouterr().err


def test_every_event_shares_one_concurrency_limit(model):
    """default_concurrency_limit is per listener: without one group, 4 listeners run 4 x 2 events at once."""
    demo = app.build_demo(zoo_of(model))
    demo.queue(default_concurrency_limit=app.CONCURRENCY, max_size=app.QUEUE_SIZE)
    handled = [fn for fn in demo.fns.values()
               if fn.api_name in {"analyze", "choose_model", "redraw", "redraw_box", "export", "explain_image", "compute_method"}]
    assert len(handled) == 7
    assert len({fn.concurrency_id for fn in handled}) == 1


def test_a_class_is_accepted_by_name_or_by_index(handlers, photo):
    state = handlers.analyze(photo, "tiny", *CONTROLS)[0]
    by_index = handlers.redraw_box(state, *controls(class_index=2))[1]["prediction"]
    assert handlers.redraw_box(state, *controls(class_index="bag"))[1]["prediction"] == by_index
    assert handlers.redraw_box(state, *controls(class_index="2"))[1]["prediction"] == by_index
    assert by_index["class_name"] == "bag"
    with pytest.raises(gr.Error, match="no class named 'hat'"):
        handlers.redraw(state, *controls(class_index="hat"))


@pytest.fixture
def two_models(model, tmp_path):
    """The 5-class tiny model, and a 3-block one that knows other classes, with an example set for the first."""
    other = make_tiny_model(seed=3, num_classes=3, depth=3)
    maps = {"tscam": {"best_threshold": 0.25, "gt_known_loc_best": 0.3},
            "trans_attention": {"best_threshold": 0.4, "gt_known_loc_best": 0.6}}
    other.info = dataclasses.replace(tiny_info(3, depth=3), class_names=["cat", "dog", "bird"],
                                     evaluation={"validation": {"best_threshold": 0.25, "maps": maps}})
    explorers = {"tiny.safetensors": Explorer(model), "other.safetensors": Explorer(other)}
    zoo = ModelZoo(list(explorers), explorers.__getitem__)
    noise(30, 30).save(tmp_path / "bag.png")
    (tmp_path / "examples.json").write_text('[{"file": "bag.png", "class_name": "bag"}]')
    return app.Handlers(zoo, [ExampleSet.read(tmp_path / "examples.json")], export_root=tmp_path / "exports")


def test_switching_the_model_explains_the_same_image_again(two_models, photo):
    first = two_models.analyze(photo, "tiny.safetensors", *CONTROLS)[0]
    info, examples_shown, mode, count, threshold, picker, state, dropdown, *_, status = two_models.choose_model(
        "other.safetensors", photo, "tscam", 0.5, "jet"
    )
    assert "other.safetensors" in info and "3 classes" in info and "cat; dog; bird" in info
    assert examples_shown.visible is False  # the bag example is for the clothing model
    assert mode == "last" and count.maximum == count.value == 3 and threshold == 0.25
    assert state.name == first.name == "photo.png" and state.class_names == ["cat", "dog", "bird"]
    assert state.depth == 3 and len(dropdown.choices) == 3 and "other.safetensors" in status
    assert picker.value == "tscam" and [name for _, name in picker.choices][:3] == ["tscam", "trans_attention", "trans_cam"]
    back = two_models.choose_model("tiny.safetensors", None, "tscam", 0.5, "jet")
    assert back[1].visible is True and back[6] is None and back[4] == 0.1  # no image yet: nothing explained
    with pytest.raises(gr.Error, match="no model 'absent'"):
        two_models.choose_model("absent", photo, "tscam", 0.5, "jet")


def test_switching_the_model_keeps_the_method_at_the_threshold_it_validated_best_at(two_models, photo):
    """The picked map's own validation threshold on the new model; a map it never compared: its default."""
    assert two_models.choose_model("other.safetensors", photo, "trans_attention", 0.5, "jet")[4] == 0.4
    assert two_models.choose_model("other.safetensors", photo, "rollout", 0.5, "jet")[4] == 0.25


def test_the_page_says_what_the_model_knows_and_warns_on_a_low_score(handlers, photo, model):
    outputs = handlers.analyze(photo, "tiny", *CONTROLS)
    top5, status = outputs[2], outputs[-1]
    assert max(top5.values()) > 0.5 and "Low score" not in status
    with torch.no_grad():  # a head that favours no class: every class scores 1/5
        for parameter in model.head.parameters():
            parameter.zero_()
    outputs = handlers.analyze(photo, "tiny", *CONTROLS)
    top5, status = outputs[2], outputs[-1]
    assert max(top5.values()) == pytest.approx(0.2)
    assert "only 20.0%" in status and "may lie outside what it knows" in status
    info = app.describe_model("tiny", handlers.zoo.get("tiny"))
    assert "5 classes, 32x32 px input" in info and "shirt; shoe; bag; dress; coat" in info


def test_explain_image_needs_no_session(handlers, photo):
    answer = handlers.explain_image(photo, "tiny", chosen_class="bag", blocks="last:1", threshold=0.3)
    assert answer["prediction"]["class_name"] == "bag" and answer["settings"]["blocks"] == [2]
    assert answer["settings"]["threshold"] == 0.3 and answer["domain"].endswith("5 classes, 32x32 px input")
    grids = answer["maps"]
    assert set(grids) == {"A*", "S_c", "M_c"}
    for grid in grids.values():
        values = np.array(grid)
        assert values.shape == (4, 4) and values.min() >= 0 and values.max() == 1
    json.dumps(answer)  # plain JSON, no arrays
    default = handlers.explain_image(photo, "tiny")
    assert default["settings"]["threshold"] == 0.1 and default["settings"]["blocks"] == [1, 2]
    with pytest.raises(gr.Error, match="block selection 'middle'"):
        handlers.explain_image(photo, "tiny", blocks="middle")


def test_the_space_set_up_in_the_docs_is_the_readmes_and_fits_this_checkout():
    root = Path(app.__file__).parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    card = readme.split("---\n")[1]
    documented = (root / "docs" / "demo.md").read_text(encoding="utf-8").split("   ```yaml\n")[1].split("   ```")[0]
    assert "\n".join(line.removeprefix("   ") for line in documented.splitlines()).strip("-\n") == card.strip()
    fields = dict(line.split(": ", 1) for line in card.splitlines() if ": " in line and not line.startswith(" "))
    assert fields["sdk_version"] == gr.__version__ and f"gradio=={gr.__version__}" in (root / "requirements.txt").read_text()
    assert (root / fields["app_file"]).is_file()
    preloaded = card.split("preload_from_hub:\n")[1].splitlines()[0].strip("- ").split()
    repo_id = timm.get_pretrained_cfg(IMAGENET_MODEL.removeprefix("timm:")).hf_hub_id
    assert preloaded == [repo_id, "model.safetensors"]  # the file timm asks the hub for first


def test_class_names_file_names_a_model_that_carries_none(tmp_path):
    unnamed = save_checkpoint(make_tiny_model(), tiny_info(), tmp_path / "unnamed.safetensors")
    (tmp_path / "names.txt").write_text("\n".join(NAMES) + "\n")
    assert app.make_loader(class_names_file=tmp_path / "names.txt")(str(unnamed)).info.class_names == NAMES
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    with pytest.raises(CheckpointError, match="unnamed.safetensors: .*three.txt: 3 class names for a 5-class model"):
        app.make_loader(class_names_file=tmp_path / "three.txt")(str(unnamed))


# --- the method picker -------------------------------------------------------------------
GRADCAM = "Compute GradCAM (a forward and a backward pass per class)"


def test_the_page_offers_the_models_methods_in_one_picker(model):
    demo = app.build_demo(zoo_of(model))
    pickers = [block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "method"]
    assert len(pickers) == 1 and not any(getattr(b, "elem_id", None) == "variant" for b in demo.blocks.values())
    assert [tuple(choice) for choice in pickers[0].choices] == picker_choices(model)


def test_an_on_demand_method_is_computed_once_and_redrawn_from_the_cache(handlers, photo, model):
    state = handlers.analyze(photo, "tiny", *CONTROLS)[0]
    picked = controls(class_index=2, method="gradcam")
    prediction, a_star, s_c, m_c, gallery, record = handlers.redraw(state, *picked)
    assert prediction is None and record is None and isinstance(m_c, Image.Image)  # TS-CAM's maps stay
    text, button = handlers.method_prompt(state, 2, "gradcam")
    assert text == "**GradCAM** of *bag*: not computed yet; it costs a forward and a backward pass per class."
    assert button.visible is True and button.value == GRADCAM
    with pytest.raises(gr.Error, match=r"the gradcam map of class 'bag' is not computed yet: press 'Compute GradCAM"):
        handlers.export(state, *picked)

    passes = []  # a real counter: forward passes of the model copy the gradient methods run on
    copy = handlers.zoo.get("tiny").runner.gradient_model()
    copy.patch_embed.register_forward_pre_hook(lambda *_: passes.append(1))
    prediction, record, status = handlers.compute_method(state, *picked)
    assert len(passes) == 1 and isinstance(prediction, Image.Image)
    assert record["settings"]["method"] == "gradcam" and record["prediction"]["class_name"] == "bag"
    assert status.startswith("**GradCAM** of *bag*: computed in ")
    assert handlers.method_prompt(state, 2, "gradcam")[1].visible is False

    boxes = set()
    for threshold in (0.0, 0.5, 0.95):
        view, moved = handlers.redraw_box(state, *controls(class_index=2, method="gradcam", threshold=threshold))
        assert isinstance(view, Image.Image) and moved["settings"]["threshold"] == threshold
        boxes.add(tuple(moved["prediction"]["box"]))
    handlers.redraw(state, *controls(class_index=2, method="gradcam", opacity=0.2, colormap="viridis"))
    assert handlers.compute_method(state, *picked)[1] == record
    png, exported = handlers.export(state, *picked)
    assert json.loads(open(exported).read())["settings"]["method_label"].startswith("GradCAM")
    assert len(boxes) > 1 and len(passes) == 1 and len(model.calls) == 1  # one explain pass, one gradient pass


def test_a_view_of_the_explanation_needs_no_button(handlers, photo):
    state = handlers.analyze(photo, "tiny", *CONTROLS)[0]
    text, button = handlers.method_prompt(state, None, "trans_cam")
    assert text == "**TransCAM**: drawn from the image's pass, no new one." and button.visible is False
    assert handlers.method_prompt(None, None, "gradcam")[1].visible is False  # no image yet


def test_a_method_the_model_cannot_give_is_refused(handlers, photo):
    state = handlers.analyze(photo, "tiny", *CONTROLS)[0]
    for handler in (handlers.redraw, handlers.redraw_box, handlers.compute_method, handlers.export):
        with pytest.raises(gr.Error, match=r"method 'cam' needs a CNN CAM model's class maps, which this model "
                                           r"does not have; choose one of tscam, .*layercam"):
            handler(state, *controls(method="cam"))
    with pytest.raises(gr.Error, match=r"unknown method 'grad-cam'"):
        handlers.explain_image(photo, "tiny", method="grad-cam")


def test_explain_image_computes_an_on_demand_method_in_the_call(handlers, photo, model):
    answer = handlers.explain_image(photo, "tiny", chosen_class="bag", method="chefer_generic")
    assert answer["settings"]["method"] == "chefer_generic" and answer["prediction"]["class_name"] == "bag"
    assert set(answer["maps"]) == {"A*", "S_c", "M_c", "chefer_generic"}
    grid = np.array(answer["maps"]["chefer_generic"])
    assert grid.shape == (4, 4) and grid.min() == 0 and grid.max() == 1
    json.dumps(answer)
