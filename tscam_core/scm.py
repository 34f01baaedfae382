"""SCM on TS-CAM: Bai et al., ECCV 2022, "Weakly Supervised Object Localization via Transformer with
Implicit Spatial Calibration" (arXiv 2207.10447).

SCM trains TS-CAM through a module that diffuses the fused attention map over the token grid, weighted
by how alike neighbouring tokens' class scores are, and recalibrates the semantic maps with it before
the loss. At inference the module is dropped: the backbone it trained is coupled as TS-CAM's is.

The definitions, from the paper's Fig. 2 (its "How SCM works" panel), with what the figure leaves open
taken from the authors' release (github.com/164140757/SCM, ``lib/models/``):

- F^0, the fused attention map: the class token's attention to the patch tokens, averaged over heads,
  summed over the blocks and min-max normalised per image. S^0: TS-CAM's semantic maps S_c.
- Each activation diffusion block (ADB) l, from (S^l, F^l):
  E = S S^T / ||S||, the cosine similarity of two tokens' class-score vectors;
  M = (D - A) ∘ (λ E - 1), the 4-neighbour grid Laplacian weighted element by element, λ learnable;
  M^-1 by Newton-Schulz iterations X <- X (2I - M X) from X_0 = α M^T;
  "reallocate" F~ = (M^-1)^T F^l; "filter" F^ = minmax(tanhshrink(F~ / (τ max F^l))), τ learnable;
  S^(l+1) = S^l + S^l ⊙ F^ and F^(l+1) = F^l + F^ (the release's residual form of the figure's S ⊗ F^).
- Training: the logits are the spatial mean of S^L. The loss reaches the backbone through F^0 too, the
  last block's class-token attention included, which TS-CAM's loss never trains.
- Inference: logits from S^0, the map F^0 ⊙ S_c (``methods/scm.py``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .model import TSCAM, timm_backbone

#: Newton-Schulz starts from α M^T, α = 0.002 in the authors' release. The iteration converges for
#: α < 2 / σ_max(M)^2; M has at most 4 neighbours a row, entries of at most |λ| + 1 and 4 |λ - 1| on
#: the diagonal, so for λ near 1 this holds on any grid.
SCHULZ_ALPHA = 0.002
#: Upper bounds a checkpoint's metadata may claim (the release uses 4 blocks, 16 and 4 iterations).
MAX_BLOCKS = 32
MAX_ITERATIONS = 64


@dataclass(frozen=True)
class CalibrationSettings:
    """SCM's hyper-parameters, defaults the authors' release: 4 ADBs, λ and τ starting at 1 and 0.5, 16
    Newton-Schulz iterations in the first ADB and 4 in each later one. None depends on the dataset: the
    grid (14 x 14 in the release) is the model's own."""

    blocks: int = 4
    lam: float = 1.0
    threshold: float = 0.5
    iterations: int = 4
    first_iterations: int = 16

    def __post_init__(self) -> None:
        for name, limit in (("blocks", MAX_BLOCKS), ("iterations", MAX_ITERATIONS),
                            ("first_iterations", MAX_ITERATIONS)):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= limit):
                raise ValueError(f"SCM {_option(name)} must be an integer in 1..{limit}, got {value!r}")
        for name, positive in (("lam", False), ("threshold", True)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
                    positive and value <= 0):
                kind = "a positive number" if positive else "a finite number"
                raise ValueError(f"SCM {_option(name)} must be {kind}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationSettings:
        """The settings a dict (a checkpoint's metadata) holds; an unknown key is refused."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown SCM settings: {', '.join(map(str, unknown))}")
        return cls(**data)


def _option(name: str) -> str:
    return f"{name} (--scm-{name.replace('_', '-')})"


def min_max(values: Tensor) -> Tensor:
    """Each row of B x N rescaled to 0..1 (a constant row gives zeros)."""
    low = values.amin(dim=1, keepdim=True)
    span = values.amax(dim=1, keepdim=True) - low
    return (values - low) / span.clamp_min(torch.finfo(values.dtype).tiny)


def fused_attention(layer_attention: Tensor) -> Tensor:
    """F^0 from A^l (B x L x h x w): the blocks' sum, min-max normalised per image; B x h x w."""
    total = layer_attention.sum(dim=1)
    return min_max(total.flatten(1)).view_as(total)


@functools.lru_cache(maxsize=8)
def grid_laplacian(height: int, width: int, device: torch.device) -> Tensor:
    """D - A of the 4-neighbour graph of a height x width token grid (tokens row by row): N x N."""
    count = height * width
    index = torch.arange(count, device=device).view(height, width)
    adjacency = torch.zeros(count, count, device=device)
    for first, second in ((index[:, :-1], index[:, 1:]), (index[:-1], index[1:])):
        adjacency[first.flatten(), second.flatten()] = 1.0
        adjacency[second.flatten(), first.flatten()] = 1.0
    return torch.diag(adjacency.sum(dim=1)) - adjacency


def newton_schulz_inverse(matrix: Tensor, iterations: int, alpha: float = SCHULZ_ALPHA) -> Tensor:
    """M^-1 of a batch of square matrices, approximated by ``iterations`` Newton-Schulz steps.

    The start α M^T is detached, as in the authors' release: the gradient flows through the steps.
    """
    twice_identity = 2 * torch.eye(matrix.shape[-1], device=matrix.device, dtype=matrix.dtype)
    inverse = alpha * matrix.detach().transpose(-2, -1)
    for _ in range(iterations):
        inverse = inverse @ (twice_identity - matrix @ inverse)
    return inverse


class ActivationDiffusionBlock(nn.Module):
    """One ADB: diffuse F over the token graph that E weighs, filter it, and scale S by it."""

    def __init__(self, lam: float, threshold: float, iterations: int) -> None:
        super().__init__()
        self.lam = nn.Parameter(torch.full((1,), float(lam)))
        self.threshold = nn.Parameter(torch.full((1,), float(threshold)))
        self.iterations = iterations

    def forward(self, semantic: Tensor, fused: Tensor) -> tuple[Tensor, Tensor]:
        """(S^(l+1), F^(l+1)) from S^l (B x C x h x w) and F^l (B x N, N = h w)."""
        batch, _, height, width = semantic.shape
        unit = F.normalize(semantic.flatten(2).transpose(1, 2), dim=-1)  # B x N x C
        similarity = unit @ unit.transpose(1, 2)  # E
        system = grid_laplacian(height, width, semantic.device) * (self.lam * similarity - 1)  # M
        inverse = newton_schulz_inverse(system, self.iterations)
        # Reallocate: (M^-1)^T F, where M^-1 = (M^-1)^T (the grid's edges go both ways, E is symmetric).
        spread = (inverse @ fused.unsqueeze(-1)).squeeze(-1)
        filtered = min_max(F.tanhshrink(spread / (self.threshold * fused.amax(dim=1, keepdim=True))))
        return semantic + semantic * filtered.view(batch, 1, height, width), fused + filtered


class SCM(TSCAM):
    """TS-CAM (conv head) with SCM's ADBs: trained through them, explained without them.

    ``forward`` in training mode gives the logits of the calibrated S^L, in eval mode TS-CAM's (the
    module dropped, paper Fig. 1c); ``explain`` is TS-CAM's in both.
    """

    def __init__(self, backbone: VisionTransformer, num_classes: int,
                 settings: CalibrationSettings = CalibrationSettings()) -> None:
        super().__init__(backbone, num_classes)
        self.settings = settings
        self.calibration = nn.ModuleList(
            ActivationDiffusionBlock(settings.lam, settings.threshold,
                                     settings.first_iterations if index == 0 else settings.iterations)
            for index in range(settings.blocks))

    def forward(self, images: Tensor) -> Tensor:
        if not self.training:
            return super().forward(images)
        return self.calibrated(images)[0].mean(dim=(2, 3))

    def calibrated(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """S^L (B x C x h x w) and F^L (B x h x w) after every ADB, in float32, the graph kept."""
        with self._capture_class_scores() as scores:
            tokens, grid = self.tokens(images)
        fused = fused_attention(self._class_attention(scores, grid))
        semantic = self.semantic_maps(tokens, grid)
        with torch.autocast(images.device.type, enabled=False):  # Newton-Schulz needs float32
            semantic, flat = semantic.float(), fused.flatten(1).float()
            for block in self.calibration:
                semantic, flat = block(semantic, flat)
        return semantic, flat.view(-1, *grid)


def create_scm(arch: str, num_classes: int, settings: CalibrationSettings = CalibrationSettings(),
               pretrained: bool = False, pretrained_file: str | None = None, **timm_kwargs) -> SCM:
    """SCM on the timm architecture ``arch`` (any ViT with a class token), as ``create_tscam`` builds TS-CAM."""
    backbone = timm_backbone(arch, pretrained, pretrained_file, **{**timm_kwargs, "num_classes": 0})
    return SCM(backbone, num_classes, settings)


__all__ = ["SCM", "ActivationDiffusionBlock", "CalibrationSettings", "create_scm", "fused_attention",
           "grid_laplacian", "newton_schulz_inverse"]
