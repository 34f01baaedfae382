"""The explicit approach of the official TS-CAM code, kept only as the benchmarks' point of comparison.

The official release runs every block with explicit softmax attention, keeps each block's
full B x H x N x N matrix, stacks them (L x B x H x N x N), averages over heads and only
then reads the class token's row. Here timm's own unfused attention path does the
explicit computation and a hook on its attention dropout keeps each matrix, so the
numbers are those of the same weights and the same code path, minus the fusion.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from tscam_core import TSCAM, Explanation


@torch.no_grad()
def explicit_explain(model: TSCAM, images: Tensor) -> Explanation:
    """Logits, per-block class-token attention and S_c, the official code's way."""
    with _keep_attention_matrices(model) as matrices:
        tokens, grid = model.tokens(images)
    stacked = torch.stack(matrices)  # L x B x H x N x N, as the official code does
    head_mean = stacked.mean(dim=2)  # L x B x N x N
    rows = head_mean[:, :, 0, model.num_prefix_tokens:]  # L x B x (h*w)
    layer_attention = rows.transpose(0, 1).reshape(images.shape[0], len(matrices), *grid)
    semantic = model.semantic_maps(tokens, grid)
    logits = model._logits(tokens, semantic)  # the model's own pooling, conv or linear head
    return Explanation(logits=logits, layer_attention=layer_attention, semantic=semantic)


@contextmanager
def _keep_attention_matrices(model: TSCAM) -> Iterator[list[Tensor]]:
    """Switch every block to explicit softmax attention and collect its attention matrix."""
    matrices: list[Tensor] = []

    def keep(_module: nn.Module, _inputs: tuple, weights: Tensor) -> None:
        matrices.append(weights)

    saved = [block.attn.fused_attn for block in model.blocks]
    handles = [block.attn.attn_drop.register_forward_hook(keep) for block in model.blocks]
    for block in model.blocks:
        block.attn.fused_attn = False
    try:
        yield matrices
    finally:
        for block, fused in zip(model.blocks, saved, strict=True):
            block.attn.fused_attn = fused
        for handle in handles:
            handle.remove()
