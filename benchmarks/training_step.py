"""Section 4: one TS-CAM training step vs one step of the plain timm classifier of the same backbone.

Both go through the project's own step (tscam_core.training.train_step: forward, cross-entropy,
backward, AdamW step) with the paper's optimizer settings and the same batch, so the figure
is what training pays for TS-CAM's conv head over every patch token.
"""

from __future__ import annotations

import copy

import timm
import torch
from torch import nn

from benchmarks.measure import Budget, milliseconds, random_images, time_interleaved
from benchmarks.report import Goal, Row, Skipped
from tscam_core import TSCAM

TRAIN_OVERHEAD_GOAL = Goal("<=", 1.05)
METHOD = ("tscam_core.training.train_step (forward, cross-entropy, backward, AdamW step with the paper's CUB "
          "settings; autocast on CUDA as the trainer does) for TS-CAM and for timm.create_model(arch, "
          "num_classes=C), the linear head on the class token; same batch, interleaved")


def plain_classifier(model: TSCAM) -> nn.Module:
    """The timm classifier of the same backbone and class count, its usual linear head on the class token."""
    info = model.info
    return timm.create_model(info.arch, num_classes=info.num_classes, **info.timm_kwargs)


def training_step(model: TSCAM, label: str, batch: int, size: tuple[int, int], budget: Budget) -> list[Row]:
    try:
        from tscam_core.recipes import preset_config
        from tscam_core.training import amp_dtype, make_optimizer, train_step
    except ImportError as error:
        raise Skipped(f"tscam_core.training is not available ({error})") from error
    device = budget.device
    config = preset_config("cub")
    dtype = amp_dtype(config, device)
    images = random_images(batch, size, device)
    labels = torch.arange(batch, device=device) % model.num_classes
    tscam = copy.deepcopy(model).train()
    plain = plain_classifier(model).to(device).train()

    def stepper(network: nn.Module):
        optimizer = make_optimizer(network, config, config.lr)
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        return lambda: train_step(network, images, labels, optimizer, scaler=scaler, autocast_dtype=dtype)

    timings = time_interleaved({"tscam": stepper(tscam), "plain": stepper(plain)},
                               budget.repeats, budget.warmup, device)
    return [Row(
        4, label, batch, f"{size[0]}x{size[1]} px, {model.num_classes} classes",
        "TS-CAM step / plain timm classifier step", timings.ratio("tscam", "plain"), goal=TRAIN_OVERHEAD_GOAL,
        detail=f"TS-CAM {milliseconds(timings.median('tscam'))}, plain {milliseconds(timings.median('plain'))}",
    )]
