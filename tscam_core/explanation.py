"""What one forward pass of TS-CAM yields, and every map derived from it.

A* (Eq. 6), M_c (Eq. 7) and the ablation variants of Table 5 are computed here and
nowhere else, from cached tensors, so that changing the layer selection or the variant
never needs the model again. The CNN CAM baseline of Table 5 yields the same object without
attention (``layer_attention=None``, depth 0), whose one map is ``"cam"``.

Class maps (S_c, and a CNN's CAM) are rectified before they are coupled or shown: a negative
score is evidence against the class, not a weaker location. Left signed, min-max normalisation
makes the most negative token the map's zero, so background (near 0) rises above the box
threshold and boxes swallow the image. The paper's Eq. 7 and the official code couple the signed
S_c; ``MapSpec(signed=True)`` does the same (``python -m tscam_core.evaluate --signed-class-maps``),
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


#: Which blocks A* averages: "all"; "first:k" / "last:k"; or explicit 0-based block indices.
Blocks = str | tuple[int, ...]
#: What the block arguments accept: a ``Blocks`` value or any sequence of indices.
BlockSelection = str | Sequence[int]


def select_layers(depth: int, blocks: BlockSelection = "all") -> list[int]:
    """Block indices (0-based, sorted) chosen by ``blocks`` out of ``depth`` blocks.

    A bare count is refused: 3 could mean the first three blocks or block 3.
    """
    if isinstance(blocks, str):
        if blocks == "all":
            return list(range(depth))
        where, count = _first_or_last(blocks)
        if count > depth:
            raise ValueError(f"layer count {count} is outside 1..{depth}")
        return list(range(count)) if where == "first" else list(range(depth - count, depth))
    chosen = _block_indices(blocks)
    outside = [index for index in chosen if not -depth <= index < depth]
    if outside:
        raise ValueError(f"block index {outside[0]} is outside a {depth}-block model")
    return sorted({index % depth for index in chosen})


def _first_or_last(blocks: str) -> tuple[str, int]:
    where, _, count = blocks.partition(":")
    if where not in ("first", "last") or not count.isdigit() or int(count) < 1:
        raise ValueError(f"block selection {blocks!r} is not 'all', 'first:k' or 'last:k' (k >= 1)")
    return where, int(count)


def _block_indices(blocks: object) -> tuple[int, ...]:
    if isinstance(blocks, (bool, int)) or not isinstance(blocks, Sequence):
        raise TypeError(f"blocks must be 'all', 'first:k', 'last:k' or a sequence of block indices, got {blocks!r}")
    if not blocks:
        raise ValueError("the block selection is empty")
    bad = [index for index in blocks if isinstance(index, bool) or not isinstance(index, int)]
    if bad:
        raise TypeError(f"block index {bad[0]!r} is not an integer")
    return tuple(blocks)


#: The block-selection controls' modes, the default first, with their labels: one default for the
#: demo and the dashboard (every block, as in the paper, shown as "last k" with k = depth).
LAYER_MODES: dict[str, str] = {"last": "last k blocks", "first": "first k blocks"}
DEFAULT_LAYER_MODE = next(iter(LAYER_MODES))


def blocks_of(mode: str, count: int, depth: int) -> Blocks:
    """The selection of a mode-and-count control: every block when ``count`` is the depth."""
    if mode not in LAYER_MODES:
        raise ValueError(f"layer mode must be 'first' or 'last', got {mode!r}")
    if not 1 <= count <= depth:
        raise ValueError(f"layer count {count} is outside 1..{depth}")
    return "all" if count == depth else f"{mode}:{count}"


def as_mode_and_count(blocks: Blocks, depth: int) -> tuple[str, int] | None:
    """``blocks`` as a mode-and-count control shows it, or None where it cannot (a scattered list)."""
    chosen = select_layers(depth, blocks)
    count = len(chosen)
    if count == depth:
        return (DEFAULT_LAYER_MODE, count)
    if chosen == list(range(count)):
        return ("first", count)
    if chosen == list(range(depth - count, depth)):
        return ("last", count)
    return None


@dataclass(frozen=True)
class MapSpec:
    """Which localization map: the variant, the blocks A* averages, and the sign convention of S_c.

    One value for every place that picks a map (evaluation settings, the explorer's caches, results
    and the docs' rows), so that no two of them can disagree on what was scored. ``signed``
    couples S_c as the paper's Eq. 7 and the official code do (see the module docstring).
    """

    variant: Variant = "tscam"
    blocks: Blocks = "all"
    signed: bool = False

    def __post_init__(self) -> None:
        if self.variant not in VARIANT_LABELS:
            raise ValueError(f"unknown map variant {self.variant!r}; choose one of {', '.join(VARIANT_LABELS)}")
        if isinstance(self.blocks, str):  # whether the blocks fit a model is checked against its depth
            if self.blocks != "all":
                _first_or_last(self.blocks)
        else:
            object.__setattr__(self, "blocks", _block_indices(self.blocks))
        if not isinstance(self.signed, bool):
            raise TypeError(f"signed must be True or False, got {self.signed!r}")
        if self.variant == "trans_attention":  # A* alone has no S_c to sign: one spec, one map
            object.__setattr__(self, "signed", False)

    def indices(self, depth: int) -> list[int]:
        """The 0-based blocks of a ``depth``-block model (a ValueError if they do not fit)."""
        return select_layers(depth, self.blocks)

    def check(self, depth: int) -> MapSpec:
        """This spec, if a model of ``depth`` blocks (0: a CNN) has its map; else a ValueError saying why."""
        check_variant(self.variant, depth)
        if depth:
            self.indices(depth)
        elif self.blocks != "all":
            raise ValueError("a CNN CAM model has no attention blocks to select")
        return self

    def record(self) -> dict:
        """The keys summary.json's settings hold it under (docs/results-format.md)."""
        layers = None if self.blocks == "all" else self.blocks if isinstance(self.blocks, str) else list(self.blocks)
        return {"variant": self.variant, "layers": layers, "signed_class_maps": self.signed}

    @classmethod
    def from_record(cls, settings: dict) -> MapSpec:
        """The spec a summary.json's settings recorded (a ValueError or TypeError names a bad field)."""
        layers = settings.get("layers")
        if isinstance(layers, int) and not isinstance(layers, bool):
            layers = f"first:{layers}"  # what results of tscam 0.1 wrote for --layers k
        return cls(settings.get("variant", "tscam"), "all" if layers is None else layers,
                   settings.get("signed_class_maps", False))

    @property
    def key(self) -> str:
        """A short text that ``parse`` reads back: ``tscam``, ``tscam@last:4``, ``tscam+signed``."""
        blocks = "" if self.blocks == "all" else "@" + (
            self.blocks if isinstance(self.blocks, str) else ",".join(map(str, self.blocks)))
        return self.variant + blocks + ("+signed" if self.signed else "")

    @classmethod
    def parse(cls, text: str) -> MapSpec:
        head, plus, flag = text.partition("+")
        if plus and flag != "signed":
            raise ValueError(f"map {text!r}: the only flag is '+signed'")
        variant, at, blocks = head.partition("@")
        if at and blocks and blocks.replace(",", "").replace("-", "").isdigit():
            return cls(variant, tuple(int(b) for b in blocks.split(",")), bool(plus))  # type: ignore[arg-type]
        return cls(variant, blocks if at else "all", bool(plus))  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        """How tables and pages name it: ``TS-CAM (A* x S_c), last 4 blocks, S_c signed``."""
        parts = [VARIANT_LABELS[self.variant]]
        if self.blocks != "all":
            parts.append(self.blocks.replace(":", " ") + " blocks" if isinstance(self.blocks, str)
                         else "blocks " + ", ".join(str(b + 1) for b in self.blocks))
        if self.signed:
            parts.append("S_c signed")
        return ", ".join(parts)


#: The paper's map: TS-CAM over every block, S_c as tscam couples it.
DEFAULT_MAP = MapSpec()


@dataclass(frozen=True)
class Explanation:
    """Cached outputs of ``TSCAM.explain`` (or ``CNNCAM.explain``) for a batch.

    logits: B x C. layer_attention: B x L x h x w, the class token's attention to the patch
    tokens in each block, averaged over heads (A^l, Eq. 5); None for a CNN, which has none.
    semantic: B x C x h x w (S_c; a CNN's class activation maps), signed as the head gives
    them (their spatial mean is the logit). Which map is derived from them is a ``MapSpec``.
    """

    logits: Tensor
    layer_attention: Tensor | None
    semantic: Tensor

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

    def attention(self, blocks: BlockSelection = "all") -> Tensor:
        """A*: the mean of the selected blocks' class-token attention, B x h x w (Eq. 6)."""
        if self.layer_attention is None:
            raise ValueError("this explanation has no attention: it comes from a CNN CAM model, "
                             "whose only map variant is 'cam'")
        index = select_layers(self.depth, blocks)
        return self.layer_attention[:, index].mean(dim=1)

    def class_maps(self, classes: Tensor | None = None, signed: bool = False) -> Tensor:
        """S_c, rectified unless ``signed``, B x K x h x w, for ``classes`` (B x K indices) or all."""
        semantic = self.semantic
        if classes is not None:  # pick the classes first: maps of C classes would be wasted work
            index = classes.to(semantic.device).long()[:, :, None, None].expand(-1, -1, *semantic.shape[-2:])
            semantic = torch.gather(semantic, 1, index)
        return semantic if signed else semantic.clamp(min=0)

    def coupled(self, blocks: BlockSelection = "all", classes: Tensor | None = None, signed: bool = False) -> Tensor:
        """M_c = A* (x) S_c (``class_maps``), B x K x h x w, for ``classes`` or all classes (Eq. 7)."""
        return self.attention(blocks).unsqueeze(1) * self.class_maps(classes, signed)

    def maps(self, spec: MapSpec = DEFAULT_MAP, classes: Tensor | None = None) -> Tensor:
        """The localization maps ``spec`` names, B x K x h x w, for ``classes`` (B x K indices) or all classes.

        TransAttention is class-agnostic, so its map repeats for every class asked for. A CNN's
        explanation has only ``"cam"`` (its class maps); a TS-CAM one has the three of ``VARIANTS``.
        """
        check_variant(spec.variant, self.depth)
        if spec.variant == "trans_attention":
            attention = self.attention(spec.blocks).unsqueeze(1)
            count = self.semantic.shape[1] if classes is None else classes.shape[1]
            return attention.expand(-1, count, -1, -1)
        if spec.variant == "tscam":
            return self.coupled(spec.blocks, classes, spec.signed)
        return self.class_maps(classes, spec.signed)

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
        return Explanation(self.logits[index], attention, self.semantic[index])

    def to(self, device: torch.device | str) -> Explanation:
        attention = None if self.layer_attention is None else self.layer_attention.to(device)
        return Explanation(self.logits.to(device), attention, self.semantic.to(device))
