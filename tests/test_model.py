"""TSCAM against an explicit reference: the slow, official way of getting attention, and timm itself."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import TINY_ARCH, TINY_CLASSES, TINY_KWARGS, make_tiny_model
from torch.utils._python_dispatch import TorchDispatchMode

from tscam_core import TSCAM, create_tscam

SMALL_VIT = ("vit_tiny_patch16_224", {"img_size": 64, "patch_size": 8, "depth": 3, "embed_dim": 48, "num_heads": 3})
DEIT_TINY = ("deit_tiny_patch16_224", {})
# register tokens, position embeddings on patches only, normalised q and k: other timm ViT options
REG_VIT = ("vit_tiny_patch16_224", {**SMALL_VIT[1], "reg_tokens": 2, "no_embed_class": True, "qk_norm": True})
REG_PLAIN_VIT = ("vit_tiny_patch16_224", {**SMALL_VIT[1], "reg_tokens": 2, "qkv_bias": False})
# a convolutional stem (stride 4) before 2 x 2 patches: 8-pixel tokens, as the shipped model
HYBRID_VIT = ("vit_tiny_r_s16_p8_224", {"img_size": 64, "patch_size": 2, "depth": 2, "embed_dim": 48, "num_heads": 3})

# (model, input height, input width): the native size, a larger square one and a non-square one,
# the last two through position-embedding interpolation.
CASES = [
    pytest.param(SMALL_VIT, 64, 64, id="small-native-64x64"),
    pytest.param(SMALL_VIT, 96, 96, id="small-96x96"),
    pytest.param(SMALL_VIT, 48, 80, id="small-48x80"),
    pytest.param(DEIT_TINY, 224, 224, id="deit_tiny-native-224x224"),
    pytest.param(DEIT_TINY, 160, 192, id="deit_tiny-160x192"),
    pytest.param(REG_VIT, 64, 64, id="registers-qknorm-64x64"),
    pytest.param(REG_VIT, 56, 40, id="registers-qknorm-56x40"),
    pytest.param(REG_PLAIN_VIT, 64, 64, id="registers-no-qkv-bias-64x64"),
    pytest.param(HYBRID_VIT, 64, 64, id="hybrid-stem-64x64"),
    pytest.param(HYBRID_VIT, 48, 80, id="hybrid-stem-48x80"),
]


def build(spec: tuple[str, dict], num_classes: int = 7, seed: int = 0) -> TSCAM:
    arch, kwargs = spec
    torch.manual_seed(seed)
    return create_tscam(arch, num_classes, pretrained=False, **kwargs).eval()


def timm_twin(model: TSCAM, spec: tuple[str, dict]) -> torch.nn.Module:
    """The same transformer as a plain timm model (own position-embedding code), same weights."""
    arch, kwargs = spec
    twin = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True, **kwargs).eval()
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    twin.load_state_dict(weights, strict=True)
    return twin


def explicit_reference(model: TSCAM, twin: torch.nn.Module, images: torch.Tensor):
    """Logits, per-block class-token attention and S_c, with every block's full N x N softmax.

    This is how the official TS-CAM code gets its maps: each block computes
    softmax(q k^T / sqrt(d)) explicitly, keeps it, and multiplies it with v.
    """
    x = twin.norm_pre(twin.patch_drop(twin._pos_embed(twin.patch_embed(images))))
    prefix = twin.num_prefix_tokens
    rows = []
    for block in twin.blocks:
        attn = block.attn
        y = block.norm1(x)
        batch, tokens, dim = y.shape
        qkv = attn.qkv(y).reshape(batch, tokens, 3, attn.num_heads, dim // attn.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        weights = (q @ k.transpose(-2, -1) * attn.scale).softmax(dim=-1)  # B x H x N x N
        rows.append(weights.mean(dim=1)[:, 0, prefix:])
        mixed = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + block.ls1(attn.proj(attn.norm(mixed)))
        x = x + block.ls2(block.mlp(block.norm2(x)))
    x = twin.norm(x)
    height, width = images.shape[-2] // model.patch_size[0], images.shape[-1] // model.patch_size[1]
    feature_map = x[:, prefix:].transpose(1, 2).reshape(batch, dim, height, width)
    semantic = F.conv2d(feature_map, model.head.weight, model.head.bias, padding=1)
    logits = F.adaptive_avg_pool2d(semantic, 1).flatten(1)
    attention = torch.stack(rows, dim=1).reshape(batch, len(rows), height, width)
    return logits, attention, semantic


# A single image takes explain's one-bmm path, a batch the per-head products (and so does qk_norm).
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("spec", "height", "width"), CASES)
def test_explain_matches_explicit_softmax_reference(spec, height, width, batch):
    model = build(spec)
    twin = timm_twin(model, spec)
    torch.manual_seed(1)
    images = torch.randn(batch, 3, height, width)
    with torch.no_grad():
        logits, attention, semantic = explicit_reference(model, twin, images)
        explanation = model.explain(images)
        forward_logits = model(images)
    grid = (height // model.patch_size[0], width // model.patch_size[1])
    assert explanation.layer_attention.shape == (batch, model.depth, *grid)
    assert explanation.semantic.shape == (batch, 7, *grid)
    torch.testing.assert_close(explanation.layer_attention, attention, atol=1e-5, rtol=0)
    torch.testing.assert_close(explanation.semantic, semantic, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explanation.logits, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explanation.logits, forward_logits, atol=0, rtol=0)
    # each block's class-token row is a distribution over the prefix and patch tokens
    assert bool((explanation.layer_attention.sum(dim=(2, 3)) <= 1 + 1e-6).all())
    assert all(block.attn.fused_attn for block in model.blocks)


class ShapeRecorder(TorchDispatchMode):
    """Records the shape of every tensor any ATen operator produces, and the operators run."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append(str(func))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.shapes.append(tuple(tensor.shape))
        return out


def square_attention_shapes(recorder: ShapeRecorder, tokens: int) -> list[tuple[int, ...]]:
    return [shape for shape in recorder.shapes if sum(1 for size in shape if size == tokens) >= 2]


def test_explain_never_materialises_n_by_n_attention():
    model = build(SMALL_VIT)
    images = torch.randn(2, 3, 64, 64)
    tokens = 1 + (64 // 8) ** 2
    with ShapeRecorder() as recorder:
        model.explain(images)
    assert square_attention_shapes(recorder, tokens) == []
    fused_calls = [op for op in recorder.ops if "scaled_dot_product" in op]
    assert len(fused_calls) == model.depth  # every block kept its fused kernel

    # The recorder does see N x N matrices when a block computes attention explicitly.
    for block in model.blocks:
        block.attn.fused_attn = False
    with ShapeRecorder() as explicit:
        model.explain(images)
    assert len(square_attention_shapes(explicit, tokens)) >= model.depth


def test_parameter_names_are_the_official_releases():
    model = make_tiny_model()
    per_block = [
        "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
        "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
    ]
    expected = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                "norm.weight", "norm.bias", "head.weight", "head.bias"}
    expected |= {f"blocks.{i}.{name}" for i in range(TINY_KWARGS["depth"]) for name in per_block}
    state = model.state_dict()
    assert set(state) == expected
    assert tuple(state["head.weight"].shape) == (TINY_CLASSES, TINY_KWARGS["embed_dim"], 3, 3)
    assert tuple(state["head.bias"].shape) == (TINY_CLASSES,)
    assert isinstance(model.head, torch.nn.Conv2d) and model.head.stride == (1, 1) and model.head.padding == (1, 1)


def test_head_is_he_initialised():
    torch.manual_seed(0)
    model = create_tscam(TINY_ARCH, 40, **{**TINY_KWARGS, "embed_dim": 96})
    weight = model.head.weight.detach()
    fan_in, fan_out = 96 * 9, 40 * 9
    he = {math.sqrt(2 / fan_in), math.sqrt(2 / fan_out)}
    assert any(abs(weight.std().item() - std) / std < 0.05 for std in he), weight.std().item()
    assert abs(weight.mean().item()) < 0.01
    assert torch.count_nonzero(model.head.bias) == 0


def test_logits_are_the_global_average_of_the_semantic_maps():
    model = make_tiny_model()
    images = torch.randn(4, 3, 32, 32)
    explanation = model.explain(images)
    torch.testing.assert_close(explanation.logits, explanation.semantic.mean(dim=(2, 3)))
    torch.testing.assert_close(model(images), explanation.logits)


def test_classification_loss_trains_through_the_semantic_maps():
    model = make_tiny_model().train()
    torch.manual_seed(3)
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, TINY_CLASSES, (8,))
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    for name in ("head.weight", "head.bias", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight",
                 "patch_embed.proj.weight", "cls_token", "pos_embed"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(15):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    assert F.cross_entropy(model(images), labels).item() < 0.5 * loss.item()


@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_zero_training_mode_uses_the_classifiers_own_head(global_pool):
    kwargs = {**TINY_KWARGS, "global_pool": global_pool}
    torch.manual_seed(0)
    model = create_tscam(TINY_ARCH, 6, head_kind="linear", pretrained=False, **kwargs).eval()
    classifier = timm.create_model(TINY_ARCH, pretrained=False, num_classes=6, **kwargs).eval()
    classifier.load_state_dict(model.state_dict(), strict=True)
    images = torch.randn(2, 3, 32, 32)
    explanation = model.explain(images)
    with torch.no_grad():
        torch.testing.assert_close(explanation.logits, classifier(images), atol=1e-6, rtol=1e-6)
        tokens = classifier.forward_features(images)[:, 1:]  # B x 16 x D
        per_token = classifier.head(classifier.fc_norm(tokens))  # the head applied to every patch token
    assert explanation.semantic.shape == (2, 6, 4, 4)
    torch.testing.assert_close(explanation.semantic, per_token.transpose(1, 2).reshape(2, 6, 4, 4),
                               atol=1e-6, rtol=1e-6)
    assert model.num_classes == 6


def test_model_call_returns_logits_only(tiny_model):
    out = tiny_model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, TINY_CLASSES)


def test_a_backbone_without_class_token_is_refused():
    backbone = timm.create_model(TINY_ARCH, pretrained=False, class_token=False, global_pool="avg",
                                 num_classes=0, **TINY_KWARGS)
    with pytest.raises(ValueError, match="class token"):
        TSCAM(backbone, 3)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown timm architecture"):
        create_tscam("no_such_vit_patch16_224", 3)


def test_an_input_that_is_not_a_multiple_of_the_patch_size_is_refused(tiny_model):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny_model.explain(torch.randn(1, 3, 36, 32))


def test_hybrid_stem_counts_pixels_per_token():
    model = build(HYBRID_VIT)
    assert model.patch_size == (8, 8) and model.pos_grid == (8, 8)
    assert model.explain(torch.randn(1, 3, 48, 80)).semantic.shape[-2:] == (6, 10)


def test_concurrent_explain_calls_keep_their_own_attention():
    """Hooks live on shared modules: each thread must record only its own pass."""
    import threading

    model = build(SMALL_VIT)
    # batches of 1 and 2: both ways explain computes the scores run at once
    inputs = [torch.randn(1 + i % 2, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    expected = [model.explain(x).layer_attention for x in inputs]
    failures: list[str] = []
    start = threading.Barrier(len(inputs) + 1)

    def work(index: int) -> None:
        start.wait()
        for _ in range(5):
            got = model.explain(inputs[index]).layer_attention
            if got.shape != expected[index].shape or not torch.allclose(got, expected[index], atol=1e-6):
                failures.append(f"thread {index}: wrong attention")

    def plain_forward() -> None:  # a logits-only caller at the same time must not disturb them
        start.wait()
        for _ in range(5):
            model(inputs[0])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    threads.append(threading.Thread(target=plain_forward))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_half_precision_model_gets_float32_attention():
    """Scores are computed in float32 from the bfloat16 q and k, as the float32 model's are from its own."""
    model = build(SMALL_VIT)
    images = torch.randn(2, 3, 64, 64)
    reference = model.explain(images).layer_attention
    model = model.to(torch.bfloat16)
    for batch in (1, 2):
        got = model.explain(images[:batch].to(torch.bfloat16)).layer_attention
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, reference[:batch], atol=2e-2, rtol=0)


def test_an_attention_without_one_qkv_projection_is_refused():
    backbone = timm.create_model(TINY_ARCH, pretrained=False, num_classes=0, **TINY_KWARGS)
    backbone.blocks[1].attn = torch.nn.Identity()
    with pytest.raises(ValueError, match="timm's Attention .*Identity"):
        TSCAM(backbone, 3)


def test_differential_attention_is_refused_not_misread():
    """DiffAttention has qkv, q_norm, k_norm, num_heads, head_dim and scale, but a different qkv layout."""
    with pytest.raises(ValueError, match="DiffAttention"):
        build((SMALL_VIT[0], {**SMALL_VIT[1], "attn_layer": "diff"}))


def test_a_distillation_token_is_refused_at_construction():
    with pytest.raises(ValueError, match="distillation token"):
        build(("deit_tiny_distilled_patch16_224", {"img_size": 64, "patch_size": 8, "depth": 2}))


def test_a_vit_without_position_embedding_is_explained():
    model = build((SMALL_VIT[0], {**SMALL_VIT[1], "pos_embed": "none"}))
    twin = timm_twin(model, (SMALL_VIT[0], {**SMALL_VIT[1], "pos_embed": "none"}))
    images = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        _, attention, semantic = explicit_reference(model, twin, images)
        explanation = model.explain(images)
    torch.testing.assert_close(explanation.layer_attention, attention, atol=1e-5, rtol=0)
    torch.testing.assert_close(explanation.semantic, semantic, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("global_pool", ["max", "avgmax", "map"])
def test_linear_head_refuses_pools_whose_logits_it_would_not_reproduce(global_pool):
    with pytest.raises(ValueError, match="global_pool"):
        create_tscam(TINY_ARCH, 6, head_kind="linear", global_pool=global_pool, **TINY_KWARGS)
