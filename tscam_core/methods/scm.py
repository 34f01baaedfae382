"""SCM's map (Bai et al., ECCV 2022; the model in ``tscam_core/scm.py``): F^0 ⊙ S_c, from one forward pass.

SCM drops its calibration module at inference and couples the attention and semantic maps of the
backbone it trained as TS-CAM does (paper Fig. 1c and Fig. 2's "Prediction", S^0 ⊗ F^0). F^0 is the
blocks' class-token attention summed and min-max normalised per image, so the least attended token
weighs zero where TS-CAM's A* keeps its floor. S_c is rectified as for TS-CAM (``explanation.py``).
Offered for SCM models only: on a TS-CAM model the same coupling would not be SCM.
"""

from __future__ import annotations

from torch import Tensor

from ..scm import SCM, fused_attention
from .registry import Method, register


def scm_maps(model: SCM, images: Tensor, classes: Tensor) -> Tensor:
    explanation = model.explain(images)
    return fused_attention(explanation.layer_attention).unsqueeze(1) * explanation.class_maps(classes)


register(Method("scm", "SCM (Bai et al. 2022): F^0 x S_c", frozenset({"attention", "tscam_head", "scm_trained"}),
                "forward", scm_maps))
