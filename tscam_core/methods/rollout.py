"""Attention rollout (Abnar and Zuidema, ACL 2020, "Quantifying Attention Flow in Transformers").

Each block's attention, averaged over heads, gets the residual connection's identity:
Ã_l = 0.5 A_l + 0.5 I (rows still sum to one). The rollout is the product over the blocks,
Ã_L ... Ã_1, and the map is the class token's row over the patch tokens. It is class-agnostic
(the same map for every class asked for).

The whole N x N matrix of every block is needed, which fused attention never forms: it is
computed beside the block from the block's own q and k (``tscam_core.model.full_attention``) while the
block itself runs fused, and only for this method.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model import TSCAM, full_attention
from .registry import Method, register


def head_mean_attention(attn, _inputs: tuple, qkv: Tensor) -> Tensor:
    """A block's attention averaged over heads, B x N x N, read from its qkv projection."""
    return full_attention(qkv.detach(), attn)[0].mean(dim=1)


@torch.no_grad()
def rollout_maps(model: TSCAM, images: Tensor, classes: Tensor) -> Tensor:
    with model.watch("qkv", head_mean_attention) as attentions:
        _, grid = model.tokens(images)
    identity = torch.eye(attentions[0].shape[-1], device=attentions[0].device)
    rollout = identity.expand_as(attentions[0])
    for attention in attentions:
        rollout = (0.5 * attention + 0.5 * identity) @ rollout
    class_row = rollout[:, 0, model.num_prefix_tokens:].reshape(-1, 1, *grid)
    return class_row.expand(-1, classes.shape[1], -1, -1)


register(Method("rollout", "Attention rollout (Abnar & Zuidema 2020)", frozenset({"attention"}), "forward",
                rollout_maps))
