"""The traced explain graph (tscam_core.graph): the eager pass's outputs bit for bit, and eager where no trace holds."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

from tests.test_cnn_cam import make_cnn
from tscam_core.explanation import Explanation
from tscam_core.graph import _TRACES, graph_explain


def assert_same(got: Explanation, expected: Explanation) -> None:
    assert torch.equal(got.logits, expected.logits)
    assert torch.equal(got.semantic, expected.semantic)
    if expected.layer_attention is None:
        assert got.layer_attention is None
    else:
        assert torch.equal(got.layer_attention, expected.layer_attention)


def images(count: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("make", [make_tiny_model, make_cnn], ids=["tscam", "cnn_cam"])
def test_the_graph_gives_the_eager_outputs_for_every_full_batch(make):
    model = make()
    for seed in range(3):
        batch = images(4, seed)
        assert_same(graph_explain(model, batch, batch_size=4), model.explain(batch))
    assert _TRACES[model].graph is not None, "the model was not traced: the test would compare eager with eager"


def test_a_last_smaller_batch_runs_eagerly_and_keeps_the_trace():
    model = make_tiny_model()
    graph_explain(model, images(4, 0), batch_size=4)
    traced = _TRACES[model]
    last = images(3, 1)
    assert_same(graph_explain(model, last, batch_size=4), model.explain(last))
    assert _TRACES[model] is traced


def test_changed_weights_are_seen_and_a_moved_model_is_traced_again():
    model = make_tiny_model()
    graph_explain(model, images(2, 0), batch_size=2)
    with torch.no_grad():
        model.head.weight.mul_(-2.0)  # in place: the trace shares the tensor
    batch = images(2, 1)
    assert_same(graph_explain(model, batch, batch_size=2), model.explain(batch))
    first = _TRACES[model]
    model.double()  # new tensors: the old trace no longer holds
    batch = images(2, 2, torch.float64)
    assert_same(graph_explain(model, batch, batch_size=2), model.explain(batch))
    assert _TRACES[model] is not first and _TRACES[model].graph is not None


def test_a_model_that_does_not_trace_runs_eagerly_and_says_so(monkeypatch, caplog):
    def refuse(*_args, **_kwargs):
        raise RuntimeError("this torch cannot trace the model")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    model = make_tiny_model()
    batch = images(2, 0)
    with caplog.at_level("WARNING", logger="tscam_core.graph"):
        assert_same(graph_explain(model, batch, batch_size=2), model.explain(batch))
    assert _TRACES[model].graph is None
    assert "TSCAM cannot be traced (RuntimeError: this torch cannot trace the model)" in caplog.text
