"""Gradient-weighted attention: Chefer et al.'s generic rule (ICCV 2021, "Generic Attention-model Explainability").

For a target class c with score y_c (the logit), every block's attention A (H x N x N) is
weighted by its gradient and rectified, then averaged over heads: Ā = E_h((∇A ⊙ A)^+), with
∇A = ∂y_c/∂A. Starting from R = I, each block in order adds its contribution, R ← R + Ā R
(their rules 5 and 6 for self-attention), and the map is the class token's row of R over the
patch tokens.

Fused attention is kept. ∇A is not read from an explicit attention matrix: the block's
attention output is O = A v per head, so ∂y/∂A = (∂y/∂O) vᵀ, with ∂y/∂O the gradient at the
input of ``attn.norm`` (the heads' merged output) and v and A computed beside the block from
its own q, k, v. One forward pass serves every class; each class costs one backward pass.

What of the CVPR 2021 rule (Chefer et al., "Transformer Interpretability Beyond Attention
Visualization") is covered: its gradient weighting E_h((∇A ⊙ ·)^+) and its aggregation of
the blocks as a product of (I + Ā) from the first block on, which R ← R + Ā R computes. Not
covered: the relevance it weights. The CVPR rule uses R^(n_b), the layer-wise relevance
(LRP) of each attention map, propagated from the logit back through every layer (the head,
LayerNorms, MLPs, GELUs, softmax, the attention's two matrix products and the residual
additions, each with its own relevance rule); that needs a relevance-propagating
re-implementation of every layer, which timm's modules do not have. The ICCV 2021 rule puts
the attention map itself in its place, which is what is computed here. Their public CVPR code
also divides each row of I + Ā by its sum before the product; the ICCV rule does not.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model import TSCAM, full_attention
from .registry import Method, register


@torch.no_grad()  # read beside the graph: the gradient reaches A through the block's output
def attention_and_values(attn, _inputs: tuple, qkv: Tensor) -> tuple[Tensor, Tensor]:
    return full_attention(qkv.detach(), attn)


def merged_head_output(_attn, inputs: tuple, _output: Tensor) -> Tensor:
    return inputs[0]


@torch.enable_grad()  # an evaluation loop calls it under no_grad
def generic_maps(model: TSCAM, images: Tensor, classes: Tensor) -> Tensor:
    with model.watch("qkv", attention_and_values) as blocks, model.watch("norm", merged_head_output) as outputs:
        images = images.detach().requires_grad_(True)  # a graph even when the weights are frozen
        scores = model(images).gather(1, classes)
    batch, count = classes.shape
    grid = model.grid_size(*images.shape[-2:])
    identity = torch.eye(blocks[0][0].shape[-1], device=images.device)
    maps = []
    for k in range(count):
        gradients = torch.autograd.grad(scores[:, k].sum(), outputs, retain_graph=k < count - 1)
        relevance = identity.expand(batch, -1, -1)
        for (attention, values), gradient in zip(blocks, gradients, strict=True):
            heads, length, dim = values.shape[1:]
            gradient = gradient.float().view(batch, length, heads, dim).transpose(1, 2)  # B x H x N x D
            weighted = (gradient @ values.transpose(-2, -1) * attention).clamp(min=0).mean(dim=1)
            relevance = relevance + weighted @ relevance
        maps.append(relevance[:, 0, model.num_prefix_tokens:].reshape(batch, *grid))
    return torch.stack(maps, dim=1)


register(Method("chefer_generic", "Generic attention explainability (Chefer et al. ICCV 2021)",
                frozenset({"attention"}), "forward+backward", generic_maps))
