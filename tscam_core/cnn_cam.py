"""CAM (Zhou et al., CVPR 2016) on a timm CNN: the CNN baseline of the paper's Table 5.

The classifier is a 1x1 convolution over the last feature map, so it gives one map per class,
M_c(x, y) = sum_k w_ck f_k(x, y) + b_c, and the logit is that map's spatial mean. Global average
pooling followed by a linear layer computes the very same logits (pooling and a linear map
commute), so these maps are exactly CAM; training classification trains them directly, as TS-CAM
trains its semantic maps (Eqs. 3-4), and both models are trained and scored by the same code.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .explanation import Explanation
from .model import timm_backbone


class CNNCAM(nn.Module):
    """A timm CNN's last feature map, a 1x1 conv classifier giving class maps, their mean as logits.

    Its explanation has no attention (``depth`` is 0), so only the ``"cam"`` map variant exists.
    """

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        if isinstance(backbone, VisionTransformer):
            raise ValueError(f"{type(backbone).__name__} is a vision transformer; explain it with TS-CAM (create_tscam)")
        width = int(getattr(backbone, "num_features", 0) or 0)
        if width <= 0 or not hasattr(backbone, "forward_features"):
            raise ValueError(f"{type(backbone).__name__} is not a timm classifier with forward_features and num_features")
        self.num_classes = num_classes
        self.backbone = backbone
        self.head = nn.Conv2d(width, num_classes, kernel_size=1)
        # oneDNN's CPU convolutions run markedly faster on NHWC tensors (and cuDNN's with AMP).
        self.to(memory_format=torch.channels_last)

    @property
    def depth(self) -> int:
        """Attention blocks: none. Evaluation and explanations read this to skip the layer counts."""
        return 0

    def class_maps(self, images: Tensor) -> Tensor:
        """M_c for every class, B x C x h x w."""
        features = self.backbone.forward_features(images.contiguous(memory_format=torch.channels_last))
        if features.ndim != 4:
            raise ValueError(f"{type(self.backbone).__name__} gives features of shape {tuple(features.shape)}, "
                             "not a B x C x h x w map")
        return self.head(features)

    def forward(self, images: Tensor) -> Tensor:
        """Logits, B x C: the spatial mean of the class maps."""
        return self.class_maps(images).mean(dim=(2, 3))

    @torch.no_grad()
    def explain(self, images: Tensor) -> Explanation:
        """Logits and class maps from one forward pass; no attention."""
        maps = self.class_maps(images)
        return Explanation(logits=maps.mean(dim=(2, 3)), layer_attention=None, semantic=maps.contiguous())


def create_cnn_cam(
    arch: str,
    num_classes: int,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    **timm_kwargs,
) -> CNNCAM:
    """CAM on the timm CNN ``arch``; ``timm_kwargs`` reach ``timm.create_model``.

    Pass ``output_stride=8`` (ResNets, EfficientNets, RegNets...) for a map fine enough to
    localize with: at timm's default stride 32 a 64-pixel image gives a 2 x 2 map.
    """
    backbone = timm_backbone(arch, pretrained, pretrained_file, **timm_kwargs, num_classes=0, global_pool="")
    return CNNCAM(backbone, num_classes)


__all__ = ["CNNCAM", "create_cnn_cam"]
