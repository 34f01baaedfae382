"""GradCAM and its family on a ViT's tokens, computed by pytorch-grad-cam (the ``grad-cam`` package).

Nothing of the methods is re-implemented: pytorch-grad-cam runs them on the last block's
``norm1`` output (the tokens its attention reads; the last block's output tokens get no
gradient from a class-token head), with ``reshape_transform`` turning the patch tokens into a
B x D x h x w feature map, the route its ViT tutorial takes. Its maps come rectified,
min-max normalised per image and resized to the input (OpenCV bilinear), so they are at the
input's size, not the token grid. Each class costs pytorch-grad-cam one forward and one
backward pass.

pytorch-grad-cam puts the model in eval mode, and its hooks record every pass through the
model while they are registered: a model that other threads run at the same time needs a
copy of its own. The parameters' ``.grad`` it fills is cleared afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import Tensor

from ..model import TSCAM
from .registry import Method, register

#: Method name -> (pytorch-grad-cam class, label).
FAMILY: dict[str, tuple[str, str]] = {
    "gradcam": ("GradCAM", "GradCAM (Selvaraju et al. 2017; pytorch-grad-cam)"),
    "gradcampp": ("GradCAMPlusPlus", "GradCAM++ (Chattopadhay et al. 2018; pytorch-grad-cam)"),
    "xgradcam": ("XGradCAM", "XGradCAM (Fu et al. 2020; pytorch-grad-cam)"),
    "hirescam": ("HiResCAM", "HiResCAM (Draelos and Carin 2020; pytorch-grad-cam)"),
    "layercam": ("LayerCAM", "LayerCAM (Jiang et al. 2021; pytorch-grad-cam)"),
}


def token_feature_map(model: TSCAM, size: tuple[int, int]) -> Callable[[Tensor], Tensor]:
    """pytorch-grad-cam's ``reshape_transform``: a block's tokens (B x N x D) as a B x D x h x w map."""
    height, width = model.grid_size(*size)

    def reshape(tokens: Tensor) -> Tensor:
        patches = tokens[:, model.num_prefix_tokens:]
        return patches.reshape(patches.shape[0], height, width, patches.shape[2]).permute(0, 3, 1, 2)

    return reshape


def family_maps(cam_class: str, model: TSCAM, images: Tensor, classes: Tensor) -> Tensor:
    # Imported here: pytorch-grad-cam loads scikit-learn and SciPy, which listing the methods
    # (the demo's picker) should not wait for.
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = getattr(pytorch_grad_cam, cam_class)(model=model, target_layers=[model.blocks[-1].norm1],
                                               reshape_transform=token_feature_map(model, images.shape[-2:]))
    cam.compute_input_gradient = True  # a graph to differentiate even when the weights are frozen
    try:
        with torch.enable_grad():
            maps = [cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in column])
                    for column in classes.T]
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
    return torch.from_numpy(np.stack(maps, axis=1))


for _name, (_cam_class, _label) in FAMILY.items():
    register(Method(_name, _label, frozenset({"tokens"}), "forward+backward", partial(family_maps, _cam_class)))
