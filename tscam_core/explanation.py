"""What one forward pass of TS-CAM yields, and every map derived from it.

A* (Eq. 6), M_c (Eq. 7) and the ablation variants of Table 5 are computed here and
nowhere else, from cached tensors, so that changing the layer selection or the variant
never needs the model again. The CNN CAM baseline of Table 5 yields the same object without
attention (``layer_attention=None``, depth 0), whose one map is ``"cam"``.

Class maps (S_c, and a CNN's CAM) are rectified before they are coupled or shown: a negative
score is evidence against the class, not a weaker location. Left signed, min-max normalisation
makes the most negative token the map's zero, so background (near 0) rises above the box
threshold and boxes swallow the image. The paper's Eq. 7 and the official code couple the signed
S_c; ``signed_class_maps=True`` does the same (``python -m tscam_core.evaluate --signed-class-maps``),
to reproduce them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Variant = Literal["tscam", "trans_attention", "trans_cam", "cam"]
#: The maps of a TS-CAM explanation.
VARIANTS: tuple[Variant, ...] = ("tscam", "trans_attention", "trans_cam")
#: The one map of an explanation without attention (CAM of a CNN, Zhou et al. 2016): its class maps.
CAM_VARIANTS: tuple[Variant, ...] = ("cam",)
VARIANT_LABELS: dict[str, str] = {
    "tscam": "TS-CAM (A* x S_c)",
    "trans_attention": "TransAttention (A*)",
    "trans_cam": "TransCAM (S_c)",
    "cam": "CAM (CNN class maps)",
}


def variants_for(depth: int) -> tuple[Variant, ...]:
    """The map variants of a model with ``depth`` attention blocks (0: a CNN, CAM only)."""
    return VARIANTS if depth else CAM_VARIANTS


def check_variant(variant: str, depth: int) -> None:
    """Raise a ValueError naming the choices when a model of ``depth`` blocks has no map ``variant``."""
    available = variants_for(depth)
    if variant in available:
        return
    if variant in VARIANTS or variant in CAM_VARIANTS:
        kind = "a CNN CAM model (no attention)" if depth == 0 else "a TS-CAM model"
        raise ValueError(f"map variant {variant!r} does not exist for {kind}; choose one of {', '.join(available)}")
    raise ValueError(f"unknown map variant {variant!r}; choose one of {', '.join(available)}")


#: None (all blocks); k > 0 (the first k blocks); "first:k" / "last:k"; or explicit block indices.
LayerSelection = None | int | str | Sequence[int]


def select_layers(depth: int, layers: LayerSelection = None) -> list[int]:
    """Block indices (0-based) chosen by ``layers`` out of ``depth`` blocks."""
    if layers is None:
        return list(range(depth))
    if isinstance(layers, bool):
        raise TypeError("layers must be a count, 'first:k', 'last:k' or a list of block indices")
    if isinstance(layers, int):
        layers = f"first:{layers}"
    if isinstance(layers, str):
        where, _, count_text = layers.partition(":")
        if where not in ("first", "last") or not count_text.strip().lstrip("-").isdigit():
            raise ValueError(f"layer selection {layers!r} is not 'first:k' or 'last:k'")
        count = int(count_text)
        if not 1 <= count <= depth:
            raise ValueError(f"layer count {count} is outside 1..{depth}")
        return list(range(count)) if where == "first" else list(range(depth - count, depth))
    chosen = []
    for index in layers:
        if not -depth <= int(index) < depth:
            raise ValueError(f"block index {index} is outside a {depth}-block model")
        chosen.append(int(index) % depth)
    if not chosen:
        raise ValueError("the layer selection is empty")
    return sorted(set(chosen))


@dataclass
class Explanation:
    """Cached outputs of ``TSCAM.explain`` (or ``CNNCAM.explain``) for a batch.

    logits: B x C. layer_attention: B x L x h x w, the class token's attention to the patch
    tokens in each block, averaged over heads (A^l, Eq. 5); None for a CNN, which has none.
    semantic: B x C x h x w (S_c; a CNN's class activation maps), signed as the head gives
    them (their spatial mean is the logit); the maps below use them rectified, or signed as the
    paper and the official code do where ``signed_class_maps``.
    """

    logits: Tensor
    layer_attention: Tensor | None
    semantic: Tensor
    signed_class_maps: bool = False

    @property
    def depth(self) -> int:
        """Attention blocks cached: 0 for a CNN."""
        return 0 if self.layer_attention is None else self.layer_attention.shape[1]

    @property
    def variants(self) -> tuple[Variant, ...]:
        """The map variants this explanation can give; the first is the method's own map."""
        return variants_for(self.depth)

    @property
    def batch_size(self) -> int:
        return self.logits.shape[0]

    def attention(self, layers: LayerSelection = None) -> Tensor:
        """A*: the mean of the selected blocks' class-token attention, B x h x w (Eq. 6)."""
        if self.layer_attention is None:
            raise ValueError("this explanation has no attention: it comes from a CNN CAM model, "
                             "whose only map variant is 'cam'")
        index = select_layers(self.depth, layers)
        return self.layer_attention[:, index].mean(dim=1)

    def class_maps(self, classes: Tensor | None = None) -> Tensor:
        """S_c (rectified unless ``signed_class_maps``), B x K x h x w, for ``classes`` (B x K indices) or all."""
        semantic = self.semantic
        if classes is not None:  # pick the classes first: maps of C classes would be wasted work
            index = classes.to(semantic.device).long()[:, :, None, None].expand(-1, -1, *semantic.shape[-2:])
            semantic = torch.gather(semantic, 1, index)
        return semantic if self.signed_class_maps else semantic.clamp(min=0)

    def coupled(self, layers: LayerSelection = None, classes: Tensor | None = None) -> Tensor:
        """M_c = A* (x) S_c (``class_maps``), B x K x h x w, for ``classes`` or all classes (Eq. 7)."""
        return self.attention(layers).unsqueeze(1) * self.class_maps(classes)

    def maps(self, variant: Variant = "tscam", layers: LayerSelection = None, classes: Tensor | None = None) -> Tensor:
        """Localization maps of one variant, B x K x h x w, for ``classes`` (B x K indices) or all classes.

        TransAttention is class-agnostic, so its map repeats for every class asked for. A CNN's
        explanation has only ``"cam"`` (its class maps); a TS-CAM one has the three of ``VARIANTS``.
        """
        check_variant(variant, self.depth)
        if variant == "trans_attention":
            attention = self.attention(layers).unsqueeze(1)
            count = self.semantic.shape[1] if classes is None else classes.shape[1]
            return attention.expand(-1, count, -1, -1)
        if variant == "tscam":
            return self.coupled(layers, classes)
        return self.class_maps(classes)

    def probabilities(self) -> Tensor:
        return self.logits.float().softmax(dim=-1)

    def top_classes(self, k: int = 5) -> tuple[Tensor, Tensor]:
        """Scores (softmax) and indices of the k best classes, each B x k."""
        k = min(k, self.logits.shape[1])
        return self.probabilities().topk(k, dim=-1)

    def select(self, index: int | slice) -> Explanation:
        """The explanation of one image (kept with a batch axis of 1) or of a slice."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        attention = None if self.layer_attention is None else self.layer_attention[index]
        return Explanation(self.logits[index], attention, self.semantic[index], self.signed_class_maps)

    def to(self, device: torch.device | str) -> Explanation:
        attention = None if self.layer_attention is None else self.layer_attention.to(device)
        return Explanation(self.logits.to(device), attention, self.semantic.to(device), self.signed_class_maps)
