"""Section 3: ``explain`` (maps of every class from one forward) vs pytorch-grad-cam's GradCAM on the same ViT.

GradCAM needs a forward and a backward per target class, so top-5 maps cost five passes;
TS-CAM's maps of all classes come from one forward. GradCAM runs on a copy of the model
so that its hooks never touch the explain timings.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from benchmarks.measure import Budget, milliseconds, random_images, time_interleaved
from benchmarks.report import Row, Skipped
from tscam_core import TSCAM
from tscam_core.methods.gradcam import token_feature_map

METHOD = ("GradCAM (pytorch-grad-cam, target layer blocks[-1].norm1, reshape_transform to B x D x h x w) on a copy "
          "of the model, one call per target class for the whole batch; its time includes its own resize of each "
          "map to the input size; explain's includes M_c of every class at token resolution")


def explain_all_classes(model: TSCAM, images: Tensor) -> Tensor:
    """What TS-CAM delivers in one pass: M_c for every class (B x C x h x w)."""
    return model.explain(images).coupled()


def gradcam_compare(model: TSCAM, label: str, batch: int, size: tuple[int, int], budget: Budget) -> list[Row]:
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as error:
        raise Skipped(f"pytorch-grad-cam is not installed (pip install grad-cam): {error}") from error

    images = random_images(batch, size, budget.device)
    top_k = min(5, model.num_classes)
    with torch.no_grad():
        ranked = model(images).topk(top_k, dim=1).indices.tolist()
    twin = copy.deepcopy(model)
    cam = GradCAM(model=twin, target_layers=[twin.blocks[-1].norm1], reshape_transform=token_feature_map(twin, size))

    def gradcam(rank: int):
        return cam(input_tensor=images, targets=[ClassifierOutputTarget(classes[rank]) for classes in ranked])

    candidates = {
        "explain": lambda: explain_all_classes(model, images),
        "gradcam_top1": lambda: gradcam(0),
        "gradcam_topk": lambda: [gradcam(rank) for rank in range(top_k)],
    }
    try:
        timings = time_interleaved(candidates, budget.repeats, budget.warmup, budget.device,
                                   warm=("explain", "gradcam_top1"))
    finally:
        cam.activations_and_grads.release()
    setting = f"{size[0]}x{size[1]} px"
    explain_time = milliseconds(timings.median("explain"))
    return [
        Row(3, label, batch, setting, "GradCAM top-1 / explain (all classes) time", timings.ratio("gradcam_top1", "explain"),
            detail=f"GradCAM {milliseconds(timings.median('gradcam_top1'))}, explain {explain_time}"),
        Row(3, label, batch, setting, f"GradCAM top-{top_k} / explain (all classes) time",
            timings.ratio("gradcam_topk", "explain"),
            detail=f"GradCAM x{top_k} {milliseconds(timings.median('gradcam_topk'))}, explain {explain_time}"),
    ]
