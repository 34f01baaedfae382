"""The method registry: each method against an explicit computation of its definition on a tiny real model.

The images are 32 x 48, a 4 x 6 token grid, so a map read with its height and width swapped
cannot pass. Attention is computed here by hand, in float64 numpy, from the q and k that each
block's own qkv weights give its input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_model

from tscam_core import TSCAM, create_cnn_cam, methods

GRID = (4, 6)
CLASSES = torch.tensor([[1, 3], [4, 0]])
GRADIENT_METHODS = ("chefer_generic", *methods.gradcam.FAMILY)


@pytest.fixture(scope="module")
def model() -> TSCAM:
    return make_tiny_model(seed=3)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 48)


def block_inputs(model: TSCAM, images: torch.Tensor) -> list[np.ndarray]:
    """What each block's attention reads (its norm1 output), B x N x D."""
    kept = []
    handles = [block.norm1.register_forward_hook(lambda _m, _i, out: kept.append(out.detach().double().numpy()))
               for block in model.blocks]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return kept


def hand_attention(model: TSCAM, images: torch.Tensor) -> list[np.ndarray]:
    """Every block's attention, B x H x N x N: softmax(q k^T / sqrt(d)) with q, k from its qkv weights."""
    attentions = []
    for block, tokens in zip(model.blocks, block_inputs(model, images), strict=True):
        attn = block.attn
        qkv = tokens @ attn.qkv.weight.detach().double().numpy().T + attn.qkv.bias.detach().double().numpy()
        batch, count, _ = qkv.shape
        heads, dim = attn.num_heads, attn.head_dim
        query = qkv[..., :heads * dim].reshape(batch, count, heads, dim).transpose(0, 2, 1, 3)
        keys = qkv[..., heads * dim:2 * heads * dim].reshape(batch, count, heads, dim).transpose(0, 2, 1, 3)
        scores = query @ keys.transpose(0, 1, 3, 2) / math.sqrt(dim)
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        attentions.append(weights / weights.sum(axis=-1, keepdims=True))
    return attentions


def gathered(maps: np.ndarray, classes: torch.Tensor) -> np.ndarray:
    return np.stack([maps[b, classes[b].numpy()] for b in range(maps.shape[0])])


def assert_maps(got: torch.Tensor, expected: np.ndarray) -> None:
    assert got.dtype == torch.float32 and tuple(got.shape) == expected.shape
    assert np.ptp(expected) > 0  # a map of one value would match anything normalised
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_tscam_and_its_variants_are_class_attention_and_rectified_class_maps(model, images):
    attention = hand_attention(model, images)
    rows = np.stack([a[:, :, 0, 1:].mean(axis=1) for a in attention], axis=1).reshape(2, len(attention), *GRID)
    tokens, grid = model.tokens(images)
    feature_map = tokens[:, 1:].transpose(1, 2).reshape(2, -1, *grid)
    semantic = F.conv2d(feature_map, model.head.weight, model.head.bias, padding=1).detach().double().numpy()
    a_star = rows.mean(axis=1)[:, None]
    class_maps = gathered(semantic, CLASSES)

    assert_maps(methods.get("tscam")(model, images, CLASSES), a_star * np.maximum(class_maps, 0))
    assert_maps(methods.get("trans_attention")(model, images, CLASSES), np.repeat(a_star, 2, axis=1))
    assert_maps(methods.get("trans_cam")(model, images, CLASSES), np.maximum(class_maps, 0))
    assert_maps(methods.get("tscam@last:1+signed")(model, images, CLASSES), rows[:, -1:] * class_maps)


def test_rollout_is_the_product_of_half_attention_half_identity(model, images):
    rollout = np.eye(GRID[0] * GRID[1] + 1)
    for attention in hand_attention(model, images):
        rollout = (0.5 * attention.mean(axis=1) + 0.5 * np.eye(attention.shape[-1])) @ rollout
    expected = rollout[:, 0, 1:].reshape(2, 1, *GRID)
    assert_maps(methods.get("rollout")(model, images, CLASSES), np.repeat(expected, 2, axis=1))


def attention_gradients(model: TSCAM, images: torch.Tensor, classes: torch.Tensor) -> list[list[np.ndarray]]:
    """d logit / d A of every block for each class column: the explicit (unfused) attention kept in the graph."""
    matrices: list[torch.Tensor] = []
    handles = [block.attn.attn_drop.register_forward_hook(lambda _m, _i, out: matrices.append(out))
               for block in model.blocks]
    for block in model.blocks:
        block.attn.fused_attn = False
    try:
        scores = model(images).gather(1, classes)
        return [[g.double().numpy() for g in torch.autograd.grad(scores[:, k].sum(), matrices, retain_graph=True)]
                for k in range(classes.shape[1])]
    finally:
        for block in model.blocks:
            block.attn.fused_attn = True
        for handle in handles:
            handle.remove()


def test_chefer_generic_rule_against_an_explicit_loop(model, images):
    attention = hand_attention(model, images)
    expected = []
    for gradients in attention_gradients(model, images, CLASSES):
        relevance = np.broadcast_to(np.eye(attention[0].shape[-1]), attention[0].shape[:1] + attention[0].shape[2:])
        for a, g in zip(attention, gradients, strict=True):
            relevance = relevance + np.maximum(g * a, 0).mean(axis=1) @ relevance
        expected.append(relevance[:, 0, 1:].reshape(2, *GRID))
    assert_maps(methods.get("chefer_generic")(model, images, CLASSES), np.stack(expected, axis=1))


@pytest.mark.parametrize("name", list(methods.gradcam.FAMILY))
def test_gradcam_family_is_pytorch_grad_cam_on_the_last_blocks_tokens(model, images, name):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:].reshape(tokens.shape[0], *GRID, tokens.shape[-1]).permute(0, 3, 1, 2)

    cam = getattr(pytorch_grad_cam, methods.gradcam.FAMILY[name][0])(
        model=model, target_layers=[model.blocks[-1].norm1], reshape_transform=tokens_to_map)
    try:
        direct = np.stack([cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in CLASSES[:, k]])
                           for k in range(CLASSES.shape[1])], axis=1)
    finally:
        cam.activations_and_grads.release()
    assert direct.shape == (2, 2, 32, 48)
    assert_maps(methods.get(name)(model, images, CLASSES), direct)


@pytest.mark.parametrize("name", GRADIENT_METHODS[:2])
def test_gradient_methods_work_under_no_grad_on_frozen_weights_and_leave_nothing_behind(images, name):
    model = make_tiny_model(seed=3)
    reference = methods.get(name)(model, images, CLASSES)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    with torch.no_grad():  # as an evaluation loop calls it
        frozen = methods.get(name)(model, images, CLASSES)
    torch.testing.assert_close(frozen, reference)
    assert all(parameter.grad is None for parameter in model.parameters())
    assert not any(module._forward_hooks for module in model.modules())


def test_cnn_cam_is_the_one_by_one_classifier_on_the_last_feature_map(images):
    torch.manual_seed(0)
    cnn = create_cnn_cam("resnet10t", 5, channels=[8, 16, 32, 64], stem_width=8, output_stride=8).eval()
    with torch.no_grad():
        cnn.head.bias.normal_()
        features = cnn.backbone.forward_features(images).double().numpy()
    weight = cnn.head.weight.detach().double().numpy()[:, :, 0, 0]
    maps = np.einsum("cd,bdhw->bchw", weight, features) + cnn.head.bias.detach().double().numpy()[:, None, None]
    assert_maps(methods.get("cam")(cnn, images, CLASSES), np.maximum(gathered(maps, CLASSES), 0))


def test_a_model_is_offered_the_methods_it_has_what_they_need_for(model):
    cnn = create_cnn_cam("resnet10t", 5, channels=[8, 16, 32, 64], stem_width=8, output_stride=8)
    assert [m.name for m in methods.available(cnn)] == ["cam"]
    assert [m.name for m in methods.available(model)] == [n for n in methods.names() if n not in ("cam", "scm")]
    assert methods.available(torch.nn.Linear(2, 2)) == ()
    with pytest.raises(ValueError, match=r"method 'rollout' needs the attention of a ViT's blocks .*; CNNCAM has none"):
        methods.get("rollout")(cnn, torch.zeros(1, 3, 32, 32), torch.tensor([[0]]))


def test_each_method_names_its_cost():
    costs = {name: methods.get(name).cost for name in methods.names()}
    assert {name for name, cost in costs.items() if cost == "forward+backward"} == set(GRADIENT_METHODS)
    assert methods.names()[:4] == ("tscam", "trans_attention", "trans_cam", "cam")  # one-forward methods lead
    assert all(methods.get(name).gradients == (name in GRADIENT_METHODS) for name in methods.names())


@pytest.mark.parametrize(("name", "error", "message"), [
    ("gradcam++", ValueError, r"unknown method 'gradcam\+\+'; choose one of tscam, trans_attention, .*layercam"),
    ("rollout@last:2", ValueError, r"unknown method 'rollout@last:2'"),
    ("tscam@middle:2", ValueError, r"block selection 'middle:2' is not 'all', 'first:k' or 'last:k'"),
])
def test_an_unknown_name_is_refused_with_the_choices(name, error, message):
    with pytest.raises(error, match=message):
        methods.get(name)


@pytest.mark.parametrize(("classes", "error", "message"), [
    (torch.tensor([[0.0], [1.0]]), TypeError, r"classes must be integer indices, got torch.float32"),
    (torch.tensor([[0], [5]]), ValueError, r"class index 5 is outside 0..4"),
    (torch.tensor([[0], [-1]]), ValueError, r"class index -1 is outside 0..4"),
    (torch.tensor([0, 1]), ValueError, r"classes must be B x K indices for a batch of 2, got shape \(2,\)"),
    (torch.tensor([[0]]), ValueError, r"classes must be B x K indices for a batch of 2, got shape \(1, 1\)"),
])
def test_bad_classes_are_refused_by_name(model, images, classes, error, message):
    with pytest.raises(error, match=message):
        methods.get("tscam")(model, images, classes)


def test_a_second_method_of_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="a method named 'rollout' is already registered"):
        methods.register(methods.get("rollout"))
