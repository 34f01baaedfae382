"""The explain pass as one traced TorchScript graph, for the evaluation's model thread.

Why: the evaluation scores maps in threads beside the model. Run op by op, the model's thread
takes Python's GIL back after every operation and, each time, waits for a scoring thread to let
go of it; on a small model with few cores those waits cost more than the arithmetic. A traced
graph runs the whole pass in C++ with the GIL released. It is run without TorchScript's
optimising passes (no fusion), so its outputs are the eager pass's, bit for bit.

Kept, measured against the alternative of a process pool (``python benchmarks/graph_or_pool.py``:
section 5's ratio, full evaluation / forward-only images/s, shipped model, batch 16, 2 cores under
a load average of about 7): thread pool with the trace 0.464x, eager 0.496x; process pool with the
trace 0.447x, eager 0.431x. A process pool frees the model's thread of the GIL, but on a few cores
it loses more to pickling and forking than the trace costs, and ``pool="auto"`` picks threads
below ``PROCESS_POOL_CORES``; with processes the eager model was the slowest of the four in this
run and in a second one. Threads with and without the trace differ by less than the load's noise
here (an earlier run: 0.550x with the trace, 0.528x eager), so the trace is kept for the quiet
machine on which section 5 was set (docs/performance.md) until a quiet run says otherwise.

A trace holds for one input shape, device and dtype, and for the model's parameters as they
are (in-place updates are seen; moved or replaced parameters are not): anything else runs
eagerly, and so does a model that cannot be traced (or a torch without ``torch.jit.trace``).
"""

from __future__ import annotations

import logging
import warnings
import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .explanation import Explanation

log = logging.getLogger("tscam_core.graph")


class _ExplainOutputs(nn.Module):
    """``model.explain`` as a module that returns tensors only, as tracing needs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        explanation = self.model.explain(images)
        if explanation.layer_attention is None:
            return explanation.logits, explanation.semantic
        return explanation.logits, explanation.semantic, explanation.layer_attention


@dataclass(frozen=True)
class _Trace:
    key: tuple
    graph: torch.jit.ScriptModule | None  # None: tracing failed for this key; run eagerly


#: One trace per model, reused by later evaluations of the same model in this process.
_TRACES: weakref.WeakKeyDictionary[nn.Module, _Trace] = weakref.WeakKeyDictionary()


def graph_explain(model: nn.Module, images: Tensor, batch_size: int) -> Explanation:
    """``model.explain(images)``, through the model's traced graph for full batches of ``batch_size``.

    The first full batch traces the model (one extra pass, kept for later calls while the key
    holds); a smaller batch, such as an evaluation's last one, runs eagerly rather than trace again.
    """
    if len(images) != batch_size:
        return model.explain(images)
    key = _trace_key(model, images)
    trace = _TRACES.get(model)
    if trace is None or trace.key != key:
        trace = _TRACES[model] = _Trace(key, _traced(model, images))
    if trace.graph is None:
        return model.explain(images)
    with torch.no_grad(), torch.jit.optimized_execution(False):
        outputs = trace.graph(images)
    logits, semantic, *attention = outputs
    return Explanation(logits=logits, layer_attention=attention[0] if attention else None, semantic=semantic)


def _trace_key(model: nn.Module, images: Tensor) -> tuple:
    """What a trace depends on: the input shape first, then what must not have changed since."""
    parameters = tuple((p.data_ptr(), p.dtype, p.device) for p in model.parameters())
    return tuple(images.shape), images.device, images.dtype, model.training, parameters


def _traced(model: nn.Module, images: Tensor) -> torch.jit.ScriptModule | None:
    trace = getattr(torch.jit, "trace", None)
    if trace is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its deprecation notice, and tracer notes on Python-side constants
            with torch.no_grad():
                return trace(_ExplainOutputs(model), (images,), check_trace=False)
    except Exception as error:  # noqa: BLE001 - any model that does not trace runs eagerly, as it would without this
        log.warning("%s cannot be traced (%s: %s); it runs op by op, with the same results, more slowly beside "
                    "the scoring threads", type(model).__name__, type(error).__name__, error)
        return None


__all__ = ["graph_explain"]
