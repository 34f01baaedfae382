"""The TS-CAM model (paper Section 3.2) on a timm VisionTransformer with a class token.

The backbone's modules are adopted under the names of the official TS-CAM release
(``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks.N``, ``norm``, ``head``) so that
official checkpoints load as they are. The MLP head is replaced by a 3x3 convolution that
turns the patch-token feature map into per-class semantic maps S_c; their spatial mean
is the logit (Eqs. 3-4), so classification trains the maps directly.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal, TypeVar

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .explanation import Explanation

HeadKind = Literal["conv", "linear"]
#: The parts of a block's attention that ``TSCAM.watch`` reads.
AttentionPart = Literal["qkv", "norm"]
T = TypeVar("T")


class TSCAM(nn.Module):
    """A ViT whose classifier is a 3x3 conv over patch tokens, explained in one forward pass.

    ``head_kind="conv"`` is TS-CAM proper. ``head_kind="linear"`` keeps a plain timm
    classifier's linear head and applies it to every patch token as the semantic map (the
    FC variant of the appendix's Table 10): it explains an ImageNet model with no training.
    """

    def __init__(self, backbone: VisionTransformer, num_classes: int, head_kind: HeadKind = "conv") -> None:
        super().__init__()
        if not isinstance(backbone, VisionTransformer) or getattr(backbone, "cls_token", None) is None:
            raise ValueError(
                f"TS-CAM needs a timm VisionTransformer with a class token, got {type(backbone).__name__}"
            )
        extra = backbone.num_prefix_tokens - 1 - (0 if backbone.reg_token is None else backbone.reg_token.shape[1])
        if extra:
            raise ValueError(f"TS-CAM needs a ViT whose prefix tokens are the class token and register tokens; "
                             f"{type(backbone).__name__} has {extra} more (a distillation token?)")
        _check_attention(backbone.blocks)
        if head_kind not in ("conv", "linear"):
            raise ValueError(f"head_kind must be 'conv' or 'linear', got {head_kind!r}")
        self.head_kind = head_kind
        self.num_classes = num_classes
        self.embed_dim = backbone.embed_dim
        self.num_prefix_tokens = backbone.num_prefix_tokens
        self.no_embed_class = backbone.no_embed_class
        self.pos_grid = tuple(backbone.patch_embed.grid_size)
        # Pixels per token: the patch size, times a hybrid stem's stride (HybridEmbed's patch_size
        # counts feature-map cells, not pixels).
        self.patch_size = tuple(side // cells for side, cells in zip(backbone.patch_embed.img_size, self.pos_grid, strict=True))

        # Adopted modules, named as in the official release.
        self.patch_embed = backbone.patch_embed
        self.patch_embed.strict_img_size = False  # any input size; pos_embed is resampled below
        self.cls_token = backbone.cls_token
        self.reg_token = backbone.reg_token
        self.pos_embed = backbone.pos_embed
        self.pos_drop = backbone.pos_drop
        self.patch_drop = backbone.patch_drop
        self.norm_pre = backbone.norm_pre
        self.blocks = backbone.blocks
        self.norm = backbone.norm

        if head_kind == "conv":
            self.head = nn.Conv2d(self.embed_dim, num_classes, kernel_size=3, stride=1, padding=1)
            nn.init.kaiming_normal_(self.head.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.head.bias)
        else:
            if not isinstance(backbone.head, nn.Linear):
                raise ValueError("head_kind='linear' needs a backbone that still has its linear classifier")
            if backbone.global_pool not in ("token", "avg") or getattr(backbone, "pool_include_prefix", False):
                raise ValueError(f"head_kind='linear' reproduces the classifier's logits for global_pool 'token' or "
                                 f"'avg' over patch tokens, not {backbone.global_pool!r}")
            self.fc_norm = backbone.fc_norm
            self.head = backbone.head
            self.global_pool = backbone.global_pool

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Token grid (h, w) for an input of this size."""
        return height // self.patch_size[0], width // self.patch_size[1]

    def tokens(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Run the transformer: all tokens after the final norm, and the patch grid size."""
        height, width = images.shape[-2:]
        if height % self.patch_size[0] or width % self.patch_size[1]:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {self.patch_size}")
        x = self.patch_embed(images)
        if x.ndim == 4:  # NHWC from a dynamic-size patch embedding
            grid = (x.shape[1], x.shape[2])
            x = x.flatten(1, 2)
        else:
            grid = self.grid_size(images.shape[-2], images.shape[-1])
        x = self._add_position(x, grid)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        x = self.blocks(x)
        return self.norm(x), grid

    def _add_position(self, patches: Tensor, grid: tuple[int, int]) -> Tensor:
        """Prepend class (and register) tokens and add position embeddings resampled to ``grid``."""
        batch = patches.shape[0]
        prefix = [self.cls_token.expand(batch, -1, -1)]
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(batch, -1, -1))
        pos = self.pos_embed
        if pos is None:  # pos_embed='none': no position embedding to add
            return self.pos_drop(torch.cat(prefix + [patches], dim=1))
        if grid != self.pos_grid:
            pos = resample_abs_pos_embed(
                pos, new_size=list(grid), old_size=list(self.pos_grid),
                num_prefix_tokens=0 if self.no_embed_class else self.num_prefix_tokens,
            )
        if self.no_embed_class:
            x = torch.cat(prefix + [patches + pos], dim=1)
        else:
            x = torch.cat(prefix + [patches], dim=1) + pos
        return self.pos_drop(x)

    def semantic_maps(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """S_c for every class: B x C x h x w (Eq. 3)."""
        patches = tokens[:, self.num_prefix_tokens:]
        if self.head_kind == "conv":
            feature_map = patches.transpose(1, 2).reshape(patches.shape[0], self.embed_dim, *grid)
            return self.head(feature_map)
        semantic = self.head(self.fc_norm(patches))  # B x N x C
        return semantic.transpose(1, 2).reshape(patches.shape[0], -1, *grid)

    def _logits(self, tokens: Tensor, semantic: Tensor) -> Tensor:
        if self.head_kind == "conv":
            return semantic.mean(dim=(2, 3))  # global average pooling of S_c (Eq. 4)
        if self.global_pool == "token":
            pooled = tokens[:, 0]
        else:
            pooled = tokens[:, self.num_prefix_tokens:].mean(dim=1)
        return self.head(self.fc_norm(pooled))

    def forward(self, images: Tensor) -> Tensor:
        """Logits, B x C. Use :meth:`explain` for maps."""
        tokens, grid = self.tokens(images)
        return self._logits(tokens, self.semantic_maps(tokens, grid))

    @torch.no_grad()
    def explain(self, images: Tensor) -> Explanation:
        """Logits, per-block class-token attention and S_c for all classes, from one forward pass."""
        with self._capture_class_scores() as scores:
            tokens, grid = self.tokens(images)
        layer_attention = self._class_attention(scores, grid)
        del scores  # folded into layer_attention: free them before the head's maps are made
        semantic = self.semantic_maps(tokens, grid)
        logits = self._logits(tokens, semantic)
        return Explanation(logits=logits, layer_attention=layer_attention, semantic=semantic)

    @contextmanager
    def _capture_class_scores(self) -> Iterator[list[Tensor]]:
        """Record each block's class-token scores q_cls k^T (see _class_token_scores) as the pass runs.

        Only the class token's scores are computed from each block's qkv output, so no N x N
        matrix is formed and the block's own (fused) attention runs unchanged. The scale, softmax
        and head mean wait for :meth:`_class_attention`, once for all blocks: on a small model
        the per-op overhead, not the arithmetic, is the cost.
        """
        with self.watch("qkv", lambda attn, _inputs, qkv: _class_token_scores(qkv, attn)) as scores:
            yield scores

    @contextmanager
    def watch(self, part: AttentionPart, read: Callable[[nn.Module, tuple, Tensor], T]) -> Iterator[list[T]]:
        """``read(attn, inputs, output)`` of each block's ``attn.<part>``, in block order, as passes run.

        ``"qkv"`` is the q, k, v projection (its output holds q and k: see :func:`full_attention`);
        ``"norm"`` receives the heads' merged output A v (B x N x HD) before the output projection,
        whose gradient gives the attention's (Chefer et al.). One forward hook per block: the
        block's own (fused) attention runs unchanged. The hooks sit on modules that every thread
        shares, so each records only the calling thread's passes: concurrent explain and forward
        calls (a web demo's workers) never see each other's values.
        """
        owner = threading.get_ident()
        values: list[T] = []
        modules = []
        for block in self.blocks:
            module = getattr(block.attn, part, None)
            if not isinstance(module, nn.Module):
                raise ValueError(f"{type(block.attn).__name__} has no attn.{part} to read (timm >= 1.0's Attention has)")
            modules.append((block.attn, module))
        handles = []
        for attn, module in modules:

            def record(_module: nn.Module, inputs: tuple, output: Tensor, attn=attn) -> None:
                if threading.get_ident() == owner:
                    values.append(read(attn, inputs, output))

            handles.append(module.register_forward_hook(record))
        try:
            yield values
        finally:
            for handle in handles:
                handle.remove()

    def _class_attention(self, scores: list[Tensor], grid: tuple[int, int]) -> Tensor:
        """A^l for every block, B x L x h x w: softmax of the scaled scores, patch tokens, head mean."""
        attn = self.blocks[0].attn  # one head size in every block (_check_attention)
        stacked = torch.stack(scores, dim=-2)  # B x H x L x N (H x 1 x L x N for one image: the same memory)
        stacked = stacked.view(-1, attn.num_heads, *stacked.shape[-2:]).mul_(attn.scale).softmax(dim=-1)
        patches = stacked.narrow(-1, self.num_prefix_tokens, stacked.shape[-1] - self.num_prefix_tokens)
        return patches.mean(dim=1).view(*patches.shape[:1], len(scores), *grid)


def full_attention(qkv: Tensor, attn: nn.Module) -> tuple[Tensor, Tensor]:
    """One block's attention softmax(q k^T * scale), B x H x N x N, and its values v, B x H x N x D, in float32.

    Read from the qkv projection's output (the layout of timm's Attention), for the methods
    that need every row of the matrix fused attention never forms (rollout, Chefer et al.).
    """
    batch, tokens, _ = qkv.shape
    query, keys, values = qkv.reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    query, keys = _float32(attn.q_norm(query), attn.k_norm(keys))
    return (query @ keys.transpose(-2, -1)).mul_(attn.scale).softmax(dim=-1), values.float()


def _class_token_scores(qkv: Tensor, attn: nn.Module) -> Tensor:
    """q_cls k^T for every head of one block, unscaled, from the qkv projection's output.

    B x H x N; H x 1 x N (the same memory) for a single image. timm's Attention reads its
    B x N x 3HD projection as B x N x (q, k, v) x H x D, so q and k are strided views of it;
    as_strided gives each in the layout its product needs in one op, where views chained
    from reshape/permute/select would each cost a dispatch, and every product reads k in
    place. q_norm and k_norm act on each D-vector, so on these views they give the q and k
    of the block.
    """
    if not qkv.is_contiguous():
        qkv = qkv.contiguous()
    batch, tokens, width = qkv.shape
    heads, dim = attn.num_heads, attn.head_dim
    start, row, channels = qkv.storage_offset(), tokens * width, heads * dim
    if not (isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)):
        query = attn.q_norm(qkv.as_strided((batch, heads, 1, dim), (row, dim, width, 1), start))
        keys = attn.k_norm(qkv.as_strided((batch, heads, tokens, dim), (row, dim, width, 1), start + channels))
        query, keys = _float32(query, keys)
        return (keys * query).sum(dim=-1)
    if batch == 1:  # the heads as the batch of one bmm: H x 1 x D @ H x D x N
        query = qkv.as_strided((heads, 1, dim), (dim, width, 1), start)
        keys = qkv.as_strided((heads, dim, tokens), (dim, 1, width), start + channels)
        return torch.bmm(*_float32(query, keys))
    # Batch and head strides cannot merge, so q goes block-diagonal (H x HD per image) and one
    # bmm over the batch multiplies it with k^T (HD x N).
    query = qkv.as_strided((batch, 1, channels), (row, channels, 1), start)
    keys = qkv.as_strided((batch, channels, tokens), (row, 1, width), start + channels)
    query, keys = _float32(query, keys)
    return torch.bmm(query * _head_mask(heads, dim, qkv.device), keys)


@functools.lru_cache(maxsize=8)
def _head_mask(heads: int, dim: int, device: torch.device) -> Tensor:
    """H x HD, row h selecting head h's D channels: multiplied with q it gives q block-diagonal."""
    return torch.eye(heads, device=device).repeat_interleave(dim, dim=1)


def _float32(query: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """Scores in float32 whatever the model's precision; float32 views pass with no op at all."""
    if query.dtype == torch.float32:
        return query, keys
    return query.float(), keys.float()


def _check_attention(blocks: nn.Module) -> None:
    """Refuse blocks whose attention is not timm's Attention (q and k from one qkv projection)."""
    sizes = set()
    for block in blocks:
        attn = getattr(block, "attn", None)
        if not all(hasattr(attn, name) for name in ("qkv", "q_norm", "k_norm", "num_heads", "head_dim", "scale")):
            raise ValueError(f"TS-CAM needs timm's Attention (q and k from one qkv projection), got "
                             f"{type(attn).__name__}")
        out = getattr(attn.qkv, "out_features", None)
        if out != 3 * attn.num_heads * attn.head_dim:
            raise ValueError(f"TS-CAM needs timm's Attention (qkv = q, k, v of num_heads x head_dim each), got "
                             f"{type(attn).__name__} with qkv width {out} for {attn.num_heads} heads of {attn.head_dim}")
        sizes.add(attn.head_dim)
    if len(sizes) > 1:
        raise ValueError(f"TS-CAM needs one head size in every block, got {sorted(sizes)}")


def create_tscam(
    arch: str,
    num_classes: int,
    pretrained: bool = False,
    head_kind: HeadKind = "conv",
    pretrained_file: str | None = None,
    **timm_kwargs,
) -> TSCAM:
    """Build TS-CAM on the timm architecture ``arch`` (any ViT with a class token).

    ``timm_kwargs`` reach ``timm.create_model`` (img_size, patch_size, depth, embed_dim, ...),
    so small custom configurations need no new code. ``pretrained_file`` points timm's
    pretrained-config overlay at local weights instead of the hub.
    """
    kwargs = dict(timm_kwargs)
    if head_kind == "conv":
        kwargs["num_classes"] = 0
    elif num_classes is not None:
        kwargs["num_classes"] = num_classes
    backbone = timm_backbone(arch, pretrained, pretrained_file, **kwargs)
    if head_kind == "linear":
        num_classes = backbone.num_classes
    return TSCAM(backbone, num_classes, head_kind=head_kind)


def timm_backbone(arch: str, pretrained: bool = False, pretrained_file: str | None = None, **kwargs) -> nn.Module:
    """``timm.create_model``, with local pretrained weights and a clear error for an unknown name.

    ``pretrained_file`` points timm's pretrained-config overlay at a local file instead of the hub.
    """
    if pretrained_file is not None:
        kwargs["pretrained_cfg_overlay"] = dict(file=str(pretrained_file))
        pretrained = True
    try:
        return timm.create_model(arch, pretrained=pretrained, **kwargs)
    except RuntimeError as error:
        if "not found" in str(error).lower() or "unknown model" in str(error).lower():
            raise ValueError(f"unknown timm architecture {arch!r}") from error
        raise


def infer_num_heads(embed_dim: int) -> int:
    """Heads as in DeiT/ViT: 64 channels per head (192 -> 3, 384 -> 6, 768 -> 12)."""
    return max(1, math.ceil(embed_dim / 64))


__all__ = ["TSCAM", "AttentionPart", "create_tscam", "full_attention", "infer_num_heads"]
