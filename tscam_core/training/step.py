"""One optimizer step and what it takes: AdamW, the learning-rate schedule, mixed precision, DDP."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cnn_cam import CNNCAM
from ..model import TSCAM
from ..recipes import TrainConfig
from .runtime import Runtime, amp_dtype


@dataclass
class StepResult:
    """What one optimizer step reports: mean loss and correct count of the local batch."""

    loss: float
    correct: int
    count: int


def train_step(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    scaler: torch.amp.GradScaler | None = None,
    autocast_dtype: torch.dtype | None = None,
    label_smoothing: float = 0.0,
    grad_clip: float = 0.0,
) -> StepResult:
    """Forward, cross-entropy on the logits, backward and one optimizer step, for any classifier.

    ``model`` is any module mapping images to logits (TS-CAM or a plain timm classifier), so the
    same step can be timed for both. ``autocast_dtype`` turns on mixed precision; ``scaler`` is
    needed with float16 only.
    """
    autocast = (torch.autocast(images.device.type, dtype=autocast_dtype)
                if autocast_dtype is not None else nullcontext())
    with autocast:
        logits = model(images)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    correct = int((logits.detach().argmax(dim=1) == labels).sum())
    return StepResult(float(loss.detach()), correct, int(labels.shape[0]))


def group_settings(config: TrainConfig, lr: float, head_lr: float = 0.0) -> list[tuple[float, float, bool]]:
    """(weight decay, peak rate, holds the head) of each AdamW parameter group, in order: with decay, without;
    then the same two for the head when it has a rate of its own (``head_lr`` > 0 and not ``lr``)."""
    settings = [(config.weight_decay, lr, False), (0.0, lr, False)]
    if head_lr and head_lr != lr:
        settings += [(config.weight_decay, head_lr, True), (0.0, head_lr, True)]
    return settings


def make_optimizer(model: nn.Module, config: TrainConfig, lr: float, head_lr: float = 0.0) -> torch.optim.AdamW:
    """AdamW as in the paper; no decay on biases, norms, tokens and position embeddings. The classifier
    head (the parameters named ``head.*``) gets ``head_lr`` when it is given."""
    settings = group_settings(config, lr, head_lr)
    params: list[list[nn.Parameter]] = [[] for _ in settings]
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        no_decay = parameter.ndim <= 1 or name.endswith(("cls_token", "pos_embed", "reg_token"))
        head = len(settings) > 2 and name.startswith("head.")
        params[2 * head + no_decay].append(parameter)
    groups = [{"params": group, "weight_decay": decay, "lr": peak}
              for group, (decay, peak, _) in zip(params, settings, strict=True)]
    return torch.optim.AdamW(groups, lr=lr, betas=(config.beta1, config.beta2), eps=config.eps)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak rate at optimizer step ``step``: linear warm-up, then constant or cosine."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int,
                   epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = steps_per_epoch * epochs
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, config.schedule, config.min_lr_ratio))


class Optimization:
    """The model being trained with its optimizer, schedule and AMP scaler, wrapped for DDP when the
    run has several processes. Each stage starts a fresh AdamW; the weights carry over.

    A stage may train another module around the model (a first stage's class-token classifier,
    ``ClassTokenClassifier``): ``network`` is what the steps run, ``model`` what checkpoints hold.
    """

    def __init__(self, model: TSCAM | CNNCAM, config: TrainConfig, runtime: Runtime) -> None:
        self.config = config
        self.amp = amp_dtype(config, runtime.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        if runtime.device.type == "cuda" and config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.runtime = runtime
        self.network: nn.Module = model
        self.settings: list[tuple[float, float, bool]] = []

    def start_stage(self, lr: float, steps_per_epoch: int, epochs: int, trained: nn.Module | None = None,
                    head_lr: float = 0.0) -> None:
        """A fresh AdamW with peak rate ``lr`` (``head_lr`` for the head, when given) and its schedule over
        ``epochs`` epochs, for ``trained`` (default: the model)."""
        trained = self.model if trained is None else trained
        self.network = trained
        if self.runtime.distributed:
            ids = [self.runtime.device.index] if self.runtime.device.type == "cuda" else None
            # Around the model, a stage's own head leaves TS-CAM's head out of its loss.
            self.network = nn.parallel.DistributedDataParallel(trained, device_ids=ids,
                                                               find_unused_parameters=trained is not self.model)
        self.settings = group_settings(self.config, lr, head_lr)
        self.optimizer = make_optimizer(trained, self.config, lr, head_lr)
        self.scheduler = make_scheduler(self.optimizer, self.config, steps_per_epoch, epochs)

    def step(self, images: Tensor, labels: Tensor) -> StepResult:
        config = self.config
        result = train_step(self.network, images, labels, self.optimizer, scaler=self.scaler,
                            autocast_dtype=self.amp, label_smoothing=config.label_smoothing,
                            grad_clip=config.grad_clip)
        self.scheduler.step()
        return result

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Optimizer, schedule and scaler of a resume state, for the stage already started."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._apply_hyperparameters()
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])

    def _apply_hyperparameters(self) -> None:
        """The config's AdamW settings and peak rate over those of a loaded state, so that options given
        with --resume take effect as config.json records them (with none given, nothing changes)."""
        config = self.config
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group, (decay, peak, _) in zip(self.optimizer.param_groups, self.settings, strict=True):
            group.update(weight_decay=decay, betas=(config.beta1, config.beta2), eps=config.eps, initial_lr=peak,
                         lr=peak * factor)
        self.scheduler.base_lrs = [peak for _, peak, _ in self.settings]
