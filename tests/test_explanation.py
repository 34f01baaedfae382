"""Explanation: A*, M_c and the Table 5 variants computed from cached tensors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tscam_core import VARIANTS, Explanation, MapSpec, select_layers

DEPTH, CLASSES = 6, 4


@pytest.fixture
def explanation() -> Explanation:
    generator = torch.Generator().manual_seed(0)
    attention = torch.rand(2, DEPTH, 3, 5, generator=generator)
    semantic = torch.randn(2, CLASSES, 3, 5, generator=generator)
    logits = torch.tensor([[0.1, 2.0, -1.0, 0.5], [3.0, 0.0, 1.0, 2.5]])
    return Explanation(logits=logits, layer_attention=attention, semantic=semantic)


def test_first_k_blocks(explanation):
    for k in range(1, DEPTH + 1):
        expected = sum(explanation.layer_attention[:, i] for i in range(k)) / k
        torch.testing.assert_close(explanation.attention(f"first:{k}"), expected)
    torch.testing.assert_close(explanation.attention(), explanation.layer_attention.mean(dim=1))
    torch.testing.assert_close(explanation.attention("all"), explanation.layer_attention.mean(dim=1))
    assert explanation.attention("first:2").shape == (2, 3, 5)


def test_last_k_blocks(explanation):
    expected = (explanation.layer_attention[:, 4] + explanation.layer_attention[:, 5]) / 2
    torch.testing.assert_close(explanation.attention("last:2"), expected)
    torch.testing.assert_close(explanation.attention("last:1"), explanation.layer_attention[:, 5])


def test_explicit_lists_including_negative_indices(explanation):
    expected = (explanation.layer_attention[:, 0] + explanation.layer_attention[:, 3]
                + explanation.layer_attention[:, 5]) / 3
    torch.testing.assert_close(explanation.attention([0, 3, -1]), expected)
    torch.testing.assert_close(explanation.attention((3, 0, 5, -1)), expected)  # order and repeats do not count
    torch.testing.assert_close(explanation.attention([3]), explanation.layer_attention[:, 3])  # block 3, one block
    assert select_layers(DEPTH, [-6, 2]) == [0, 2]
    assert select_layers(DEPTH, "all") == list(range(DEPTH))


@pytest.mark.parametrize("bad", [0, 3, DEPTH + 1, -1, None, "last:0", f"last:{DEPTH + 1}", "middle:2", "first:",
                                 "last:x", "3", [], [DEPTH], [-DEPTH - 1], [1.5], True])
def test_invalid_selections_raise(explanation, bad):
    """A bare count is refused: 3 could mean the first three blocks or block 3."""
    with pytest.raises((ValueError, TypeError)):
        explanation.attention(bad)


def test_coupled_is_attention_times_rectified_semantic(explanation):
    coupled = explanation.coupled("last:3")
    assert coupled.shape == (2, CLASSES, 3, 5)
    attention = explanation.attention("last:3")
    assert (explanation.semantic < 0).any()  # the fixture's S_c is signed, so rectifying matters
    for b in range(2):
        for c in range(CLASSES):
            torch.testing.assert_close(coupled[b, c], attention[b] * explanation.semantic[b, c].clamp(min=0))
    assert (coupled >= 0).all()
    signed = explanation.coupled("last:3", signed=True)
    torch.testing.assert_close(signed[1, 2], attention[1] * explanation.semantic[1, 2])


def test_negative_class_evidence_does_not_widen_the_box():
    """A signed S_c that is strongly negative off the object would, min-max normalised, lift the
    background (0) above the threshold; rectified, only the object's tokens stay."""
    from tscam_core.boxes import predict_box

    semantic = torch.zeros(1, 1, 8, 8)
    semantic[0, 0, 2:4, 2:4] = 4.0  # the object
    semantic[0, 0, 6:, 6:] = -10.0  # evidence against the class in a corner
    explanation = Explanation(torch.zeros(1, 1), torch.ones(1, 1, 8, 8), semantic)
    for variant in ("tscam", "trans_cam"):
        box = predict_box(explanation.maps(MapSpec(variant))[0, 0], (64, 64), threshold=0.5)
        assert 12 <= box[0] <= box[2] <= 36 and 12 <= box[1] <= box[3] <= 36, (variant, box)  # tokens 2-3
    signed = MapSpec("tscam", signed=True)  # Eq. 7 and the official code
    torch.testing.assert_close(explanation.maps(signed)[0, 0], explanation.layer_attention[0, 0] * semantic[0, 0])
    for variant in ("tscam", "trans_cam"):
        box = predict_box(explanation.maps(MapSpec(variant, signed=True))[0, 0], (64, 64), threshold=0.5)
        assert box[2] - box[0] > 40, (variant, box)  # the signed map's box covers most of the image


def test_maps_of_the_three_variants(explanation):
    classes = torch.tensor([[2, 0], [1, 1]])
    tscam = explanation.maps(MapSpec("tscam", "first:2"), classes)
    cam = explanation.maps(MapSpec("trans_cam", "first:2"), classes)
    attention = explanation.maps(MapSpec("trans_attention", "first:2"), classes)
    for maps in (tscam, cam, attention):
        assert maps.shape == (2, 2, 3, 5)
    coupled = explanation.coupled("first:2")
    torch.testing.assert_close(tscam[0, 0], coupled[0, 2])
    torch.testing.assert_close(tscam[1, 1], coupled[1, 1])
    torch.testing.assert_close(cam[0, 1], explanation.semantic[0, 0].clamp(min=0))
    torch.testing.assert_close(attention[1, 0], explanation.attention("first:2")[1])
    torch.testing.assert_close(attention[1, 1], explanation.attention("first:2")[1])
    # without classes: every class
    assert explanation.maps().shape == (2, CLASSES, 3, 5)
    torch.testing.assert_close(explanation.maps(MapSpec("trans_cam")), explanation.semantic.clamp(min=0))
    torch.testing.assert_close(explanation.coupled("first:2", classes), tscam)
    assert explanation.maps(MapSpec("trans_attention")).shape == (2, CLASSES, 3, 5)
    assert set(VARIANTS) == {"tscam", "trans_attention", "trans_cam"}
    with pytest.raises(ValueError, match="does not exist for a TS-CAM model"):
        explanation.maps(MapSpec("cam"))


def test_a_map_spec_is_one_frozen_value_that_reads_back_what_it_writes():
    specs = [MapSpec(), MapSpec("tscam", "last:4"), MapSpec("trans_cam", "first:2", signed=True),
             MapSpec("tscam", (0, 3, 5)), MapSpec("cam")]
    for spec in specs:
        assert MapSpec.parse(spec.key) == spec
        assert MapSpec.from_record(spec.record()) == spec
        assert hash(spec) == hash(MapSpec.parse(spec.key))
    assert [spec.key for spec in specs] == ["tscam", "tscam@last:4", "trans_cam@first:2+signed", "tscam@0,3,5", "cam"]
    assert MapSpec("tscam", (0, 3, 5)).label == "TS-CAM (A* x S_c), blocks 1, 4, 6"
    assert MapSpec("tscam", "last:4", True).label == "TS-CAM (A* x S_c), last 4 blocks, S_c signed"
    # summary.json's keys, as docs/results-format.md documents them
    assert MapSpec("tscam", [2, 4]).record() == {"variant": "tscam", "layers": [2, 4], "signed_class_maps": False}
    assert MapSpec().record() == {"variant": "tscam", "layers": None, "signed_class_maps": False}
    assert MapSpec.from_record({"layers": 3}) == MapSpec("tscam", "first:3")  # tscam 0.1's --layers 3
    # A* has no S_c to sign: one map, one spec.
    assert MapSpec("trans_attention", signed=True) == MapSpec("trans_attention")
    with pytest.raises(dataclasses.FrozenInstanceError):
        MapSpec().signed = True  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["gradcam", "tscam@middle:2", "tscam+rectified", "tscam@first:0", "tscam@"])
def test_a_map_spec_refuses_what_it_cannot_mean(bad):
    with pytest.raises(ValueError):
        MapSpec.parse(bad)


def test_a_map_spec_checks_the_depth_it_is_used_with():
    assert MapSpec("tscam", "last:6").check(6).indices(6) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="outside 1..6"):
        MapSpec("tscam", "last:7").check(6)
    with pytest.raises(ValueError, match="no attention blocks"):
        MapSpec("cam", "first:1").check(0)
    with pytest.raises(ValueError, match="does not exist for a CNN CAM model"):
        MapSpec("tscam").check(0)


def test_top_classes_are_softmax_scores_in_order(explanation):
    scores, indices = explanation.top_classes(3)
    assert indices.tolist() == [[1, 3, 0], [0, 3, 2]]
    torch.testing.assert_close(scores, explanation.logits.softmax(dim=-1).gather(1, indices))
    scores_all, _ = explanation.top_classes(99)  # k is capped at the number of classes
    assert scores_all.shape == (2, CLASSES)
    torch.testing.assert_close(scores_all.sum(dim=1), torch.ones(2))


def test_select_keeps_a_batch_axis(explanation):
    one = explanation.select(1)
    assert one.batch_size == 1 and one.depth == DEPTH
    torch.testing.assert_close(one.semantic[0], explanation.semantic[1])
    torch.testing.assert_close(one.layer_attention[0], explanation.layer_attention[1])
    torch.testing.assert_close(one.logits[0], explanation.logits[1])
    assert explanation.select(slice(0, 2)).batch_size == 2
