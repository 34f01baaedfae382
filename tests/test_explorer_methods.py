"""The explorer's method picker on tiny real models: what each model offers, maps computed on demand
equal to the method run directly, cached per (image, method, class), and safe beside other sessions."""

from __future__ import annotations

import dataclasses
import gc
import threading

import numpy as np
import pytest
import torch
from conftest import make_tiny_model, tiny_info

from tscam_core import create_cnn_cam, methods, predict_box
from tscam_core.explorer import Explorer, Settings
from tscam_core.explorer_methods import MAX_COMPUTED, MapNotComputed, picker_choices
from tscam_core.testing.bad_files import encode, noise

NAMES = ["shirt", "shoe", "bag", "dress", "coat"]
GRADIENT_METHODS = ("chefer_generic", *methods.gradcam.FAMILY)


@pytest.fixture
def model():
    model = make_tiny_model(seed=2)
    model.info = dataclasses.replace(tiny_info(), class_names=list(NAMES))
    return model


def direct_map(model, image, name: str, class_index: int) -> torch.Tensor:
    """The method run on the model as the registry runs it, on the image as the checkpoint preprocesses it."""
    return methods.get(name)(model, model.info.transform(image)[None], torch.tensor([[class_index]]))[0, 0]


def test_the_picker_lists_what_each_model_can_give_with_its_cost(model):
    choices = picker_choices(model)
    assert [name for _, name in choices] == [method.name for method in methods.available(model)]
    labels = dict((name, label) for label, name in choices)
    assert labels["tscam"] == "TS-CAM (A* x S_c) · drawn from the image's pass"
    assert labels["rollout"].endswith("· one forward pass, every class")
    assert all(labels[name].endswith("· a forward and a backward pass per class") for name in GRADIENT_METHODS)
    cnn = create_cnn_cam("resnet10t", 5, channels=[8, 16, 32, 64], stem_width=8, output_stride=8)
    assert picker_choices(cnn) == [("CAM (CNN class maps) · drawn from the image's pass", "cam")]


@pytest.mark.parametrize("name", ["rollout", "chefer_generic", "gradcam", "layercam"])
def test_a_computed_map_is_the_method_run_directly_and_gives_the_protocols_box(model, name):
    image = noise(96, 40, seed=5)
    explorer = Explorer(model)  # an image keeps its explorer's model only weakly
    explained = explorer.explain(encode(image, "PNG"))
    settings = explained.settings(name, class_index=3, threshold=0.3)
    computed = explained.compute(settings)
    expected = direct_map(model, image, name, 3)
    torch.testing.assert_close(computed.map, expected)
    assert np.ptp(expected.numpy()) > 0  # a flat map would match anything
    # The box: the protocol's upsampling to the input, its box, scaled back to the 96 x 40 original.
    box = predict_box(expected, (32, 32), 0.3) * np.array([96 / 32, 40 / 32, 96 / 32, 40 / 32])
    np.testing.assert_allclose(explained.result(settings).box, box, atol=1e-4)
    record = explained.export(settings)
    assert record["settings"]["method"] == name and record["settings"]["variant"] is None
    assert record["settings"]["method_cost"] == methods.get(name).cost
    assert explained.render(settings).size == explained.display.size


def test_a_computed_map_is_kept_per_image_method_and_class(model):
    """A real counter on a wrapper of the method's own function: redraws and a second compute call it never."""
    calls = []
    gradcam = methods.get("gradcam")

    def counted(*args):
        calls.append(1)
        return gradcam.function(*args)

    counting = dataclasses.replace(gradcam, function=counted)
    explorer = Explorer(model)
    explained = explorer.explain(encode(noise(50, 40), "PNG"))
    settings = explained.check(Settings(class_index=1, method=counting))
    with pytest.raises(MapNotComputed, match=r"gradcam map of class 'shoe' is not computed yet: press "
                                             r"'Compute GradCAM \(a forward and a backward pass per class\)'"):
        explained.result(settings)
    assert explained.method_status(settings) == (
        "**GradCAM** of *shoe*: not computed yet; it costs a forward and a backward pass per class.",
        "Compute GradCAM (a forward and a backward pass per class)")
    first = explained.compute(settings)
    assert len(calls) == 1
    boxes = set()
    for changed in (dict(threshold=0.0), dict(threshold=0.8), dict(opacity=0.1, colormap="viridis")):
        moved = dataclasses.replace(settings, **changed)
        boxes.add(tuple(explained.result(moved).box))
        explained.render(moved)
        explained.export(moved)
        assert explained.compute(moved) is first
    assert len(boxes) > 1 and len(calls) == 1
    text, button = explained.method_status(settings)
    assert text.startswith("**GradCAM** of *shoe*: computed in ") and button is None
    explained.compute(dataclasses.replace(settings, class_index=2))  # another class: its own map
    explorer.explain(encode(noise(50, 40), "PNG")).compute(settings)  # the same bytes, another image
    assert len(calls) == 3


def test_an_image_keeps_its_most_recent_computed_maps(model):
    explorer = Explorer(model)
    explained = explorer.explain(encode(noise(40, 40), "PNG"))
    picked = [explained.settings(name, class_index=index)
              for name in ("rollout", "chefer_generic", "gradcam", "xgradcam") for index in range(5)]
    for settings in picked:
        explained.compute(settings)
    assert [explained.computed(s) is not None for s in picked] == [False] * (len(picked) - MAX_COMPUTED) + [True] * MAX_COMPUTED


def test_gradient_maps_computed_in_threads_equal_sequential_ones(model):
    """pytorch-grad-cam hooks the model it runs on: on the shared model, other sessions' passes (explain
    in the other threads) would reach its hooks. Each thread explains its images and computes their maps."""
    uploads = [encode(noise(40, 30, seed=seed), "PNG") for seed in range(4)]
    explorer = Explorer(model)
    picks = [(name, index) for name in ("gradcam", "chefer_generic", "hirescam") for index in (0, 3)]
    expected = {}
    for number, data in enumerate(uploads):
        explained = explorer.explain(data)
        for name, index in picks:
            expected[number, name, index] = explained.compute(explained.settings(name, class_index=index)).map
    wrong = []

    def session(number: int) -> None:
        for _ in range(3):
            try:
                explained = explorer.explain(uploads[number])  # a forward pass on the shared model
                for name, index in picks:
                    got = explained.compute(explained.settings(name, class_index=index)).map
                    if not torch.allclose(got, expected[number, name, index], atol=1e-5):
                        wrong.append((number, name, index))
            except Exception as error:  # a mixed-up pass can also fail outright
                wrong.append(repr(error))

    threads = [threading.Thread(target=session, args=(number,)) for number in range(len(uploads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert not any(module._forward_hooks for module in model.modules())


def test_a_method_the_model_cannot_give_is_refused_by_name(model):
    explained = Explorer(model).explain(encode(noise(40, 40), "PNG"))
    with pytest.raises(ValueError, match=r"method 'cam' needs a CNN CAM model's class maps, which this model does "
                                         r"not have; choose one of tscam, trans_attention, trans_cam, rollout, .*layercam"):
        explained.settings("cam")
    with pytest.raises(ValueError, match=r"unknown method 'gradcam\+\+'; choose one of tscam, .*layercam"):
        explained.settings("gradcam++")
    with pytest.raises(ValueError, match="method 'tscam' is a view of the explanation"):
        Settings(method=methods.get("tscam"))


def test_a_session_does_not_keep_an_unloaded_model_alive(model):
    explorer = Explorer(model)
    explained = explorer.explain(encode(noise(40, 40), "PNG"))
    settings = explained.settings("gradcam", class_index=0)
    del explorer
    gc.collect()
    with pytest.raises(ValueError, match="the Explorer that explained this image is gone"):
        explained.compute(settings)


def test_the_gradient_copy_has_the_models_weights_and_none_of_its_hooks(model):
    calls = []
    model.patch_embed.register_forward_pre_hook(lambda *_: calls.append(1))
    explorer = Explorer(model)
    copy = explorer.runner.gradient_model()
    assert copy is not model and copy is explorer.runner.gradient_model()
    for (name, mine), theirs in zip(model.state_dict().items(), copy.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs), name
    assert not copy.training and not any(parameter.requires_grad for parameter in copy.parameters())
    explained = explorer.explain(encode(noise(40, 40), "PNG"))
    explained.compute(explained.settings("gradcam", class_index=0))
    assert len(calls) == 1  # explain's pass; the gradient one ran on the copy
