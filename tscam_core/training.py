"""Training TS-CAM: the step, validation with GT-known localization, and an exactly resumable loop.

A run lives in one folder: ``config.json`` (the resolved config), ``metrics.jsonl`` (one line
per epoch), ``last.safetensors`` / ``best.safetensors`` (this project's checkpoint format) and
``state.pt``, the resume state (model, optimizer, scheduler, AMP scaler, RNG states, position in
the data order). Every file is written to a temporary name and renamed, so a killed run always
leaves the previous complete file. The data order of an epoch depends only on (seed, epoch) and
each image's augmentation only on (seed, epoch, index), so a resumed run skips the batches it
already took and then computes exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from .checkpoint import (
    FAMILY_LABELS,
    ModelInfo,
    error_summary,
    load_state,
    read_checkpoint,
    read_torch_file,
    save_checkpoint,
)
from .cnn_cam import CNNCAM, create_cnn_cam
from .datasets import TorchWSOL, TrainTransform, WSOLDataset, collate, open_dataset
from .errors import CheckpointError, DatasetError
from .explanation import MapSpec
from .files import atomic_write
from .metrics import LocalizationAccumulator, ThresholdCurve
from .model import TSCAM, create_tscam
from .pretraining import PlainFashion
from .recipes import TrainConfig

if TYPE_CHECKING:
    from .datasets.fashion import BenchmarkConfig
from .transforms import Preprocess

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
#: Files of trained work: a folder holding any of them is never trained over from scratch.
WORK_FILES = ("last.safetensors", "best.safetensors", METRICS_FILE)


# ---------------------------------------------------------------- one step


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


def make_optimizer(model: nn.Module, config: TrainConfig, lr: float) -> torch.optim.AdamW:
    """AdamW as in the paper; no decay on biases, norms, tokens and position embeddings."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim <= 1 or name.endswith(("cls_token", "pos_embed", "reg_token")) else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
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


# ---------------------------------------------------------------- validation


@torch.no_grad()
def validate(model: TSCAM | CNNCAM, loader: DataLoader, thresholds: list[float], threshold: float,
             autocast_dtype: torch.dtype | None = None, spec: MapSpec | None = None) -> dict[str, Any]:
    """Top-1 classification and GT-known localization (official boxes, IoU >= 0.5) of the map ``spec``
    names: by default the model's own (TS-CAM's M_c over every block, or a CNN's CAM).

    Boxes are compared in the model-input frame, where the loader's boxes already are.
    """
    from .evaluate.maps import score_loader
    from .evaluate.scoring import Protocol

    curve = ThresholdCurve(thresholds)
    correct = count = 0
    protocol = Protocol(cam_threshold=threshold, curve=np.asarray(thresholds, np.float64))
    for record in score_loader(model, loader, protocol, spec, autocast_dtype):
        hit = record.hits.top1_cls
        curve.add(record.curve_ious, hit)
        correct += hit
        count += 1
    result = curve.result()
    gt_known = dict(zip(result["cam_thresholds"], result["gt_known"], strict=True))
    top1_loc = dict(zip(result["cam_thresholds"], result["top1"], strict=True))
    best = max(result["cam_thresholds"], key=lambda t: (gt_known[t], -abs(t - threshold)))
    return {
        "images": count,
        "top1_cls": correct / max(count, 1),
        "gt_known_loc": gt_known[threshold],
        "top1_loc": top1_loc[threshold],
        "threshold": threshold,
        "best_threshold": best,
        "gt_known_loc_best": gt_known[best],
        "top1_loc_best": top1_loc[best],
        "curve": result,
    }


@torch.no_grad()
def evaluate_split(model: TSCAM | CNNCAM, loader: DataLoader, num_classes: int, threshold: float) -> dict[str, Any]:
    """The paper's five accuracies and error analysis at one CAM threshold (the model's own maps, all blocks)."""
    from .evaluate.maps import score_loader
    from .evaluate.scoring import Protocol

    accumulator = LocalizationAccumulator(num_classes)
    for record in score_loader(model, loader, Protocol(cam_threshold=threshold)):
        accumulator.add(record.gt_class, record.top_classes, record.top1, record.gt_known_iou)
    result = accumulator.result()
    result.update(images=accumulator.count, threshold=threshold)
    return result


# ---------------------------------------------------------------- files


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temporary: torch.save(obj, temporary))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda temporary: Path(temporary).write_text(text))


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain types (loadable with weights_only)."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_state_file(path: Path) -> dict[str, Any]:
    """The resume state, read with ``weights_only=True``; a damaged file is a clear error."""
    state = read_torch_file(path)
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path}: not a tscam resume state")
    return state


# ---------------------------------------------------------------- data


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for one process) that can skip the first batches of an epoch on resume."""

    def __init__(self, dataset: torch.utils.data.Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def _ignore_sigint(_worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which saves and stops the run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def training_splits(config: TrainConfig) -> tuple[WSOLDataset, WSOLDataset]:
    """(images trained on, images validated on) of a run's config: a split on disk, or a held-out part
    of the training split. Rebuilt from a checkpoint's recipe, it gives the same validation images."""
    train = open_dataset(config.data, config.train_split, config.dataset_kind, config.on_error)
    if config.val_split == "holdout":
        return holdout_split(train, config.holdout, config.seed)
    return train, open_dataset(config.data, config.val_split, config.dataset_kind, config.on_error)


def holdout_split(dataset: WSOLDataset, count: int, seed: int) -> tuple[WSOLDataset, WSOLDataset]:
    """(train minus held-out, held-out): a seeded choice of ``count`` training images for validation."""
    if not 0 < count < len(dataset):
        raise ValueError(f"--holdout must be between 1 and {len(dataset) - 1} for {len(dataset)} training images")
    order = np.random.default_rng(seed).permutation(len(dataset))
    held = set(order[-count:].tolist())
    keep = [s for i, s in enumerate(dataset.samples) if i not in held]
    out = [s for i, s in enumerate(dataset.samples) if i in held]
    return (dataclasses.replace(dataset, samples=keep, split=f"{dataset.split}-minus-holdout"),
            dataclasses.replace(dataset, samples=out, split=f"{dataset.split}-holdout"))


# ---------------------------------------------------------------- the run


@dataclass
class Stage:
    """A part of the schedule with its own data, epochs and peak rate (a fresh AdamW each)."""

    name: str
    epochs: int
    lr: float
    train_set: TorchWSOL | PlainFashion


@dataclass
class Runtime:
    """Where this process runs: device, distributed rank and world size."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime(config: TrainConfig) -> Runtime:
    """Join the torchrun process group when there is one (NCCL on GPUs, gloo on CPUs)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = config.device
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but torch sees no CUDA device")
        device = torch.device("cuda", local_rank if world_size > 1 else torch.device(wanted).index or 0)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if config.threads:
        torch.set_num_threads(config.threads)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world_size, local_rank)


class Interrupt:
    """SIGINT / SIGTERM set a flag that the loop reads between steps: save, then stop."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *_exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def requested(self, runtime: Runtime) -> bool:
        """True on every rank when any rank was signalled, so all stop at the same step."""
        if not runtime.distributed:
            return bool(self.signum)
        flag = torch.tensor([float(self.signum)], device=runtime.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


class Interrupted(Exception):
    """The run was stopped by a signal after saving its state."""

    def __init__(self, signum: int, run_dir: Path) -> None:
        super().__init__(f"stopped by signal {signum}; state saved, continue with --resume {run_dir}")
        self.signum = signum


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or config.amp == "none":
        return None
    return torch.bfloat16 if config.amp == "bf16" else torch.float16


def build_model(config: TrainConfig, num_classes: int) -> TSCAM | CNNCAM:
    """TS-CAM (or, with ``model_family="cnn_cam"``, CNN CAM) on ``config.arch``; ImageNet weights
    from a local file, the hub, or none."""
    create = create_cnn_cam if config.model_family == "cnn_cam" else create_tscam
    kwargs = dict(config.timm_kwargs(), drop_path_rate=config.drop_path)
    if config.pretrained_file:
        path = Path(config.pretrained_file)
        if not path.is_file():
            raise CheckpointError(f"{path}: --pretrained-file does not exist")
        try:
            return create(config.arch, num_classes, pretrained_file=str(path), **kwargs)
        except (OSError, RuntimeError) as error:
            raise CheckpointError(
                f"{path}: --pretrained-file cannot be loaded as the weights of --arch {config.arch} with these "
                f"options ({type(error).__name__}: {error_summary(error)})") from error
    try:
        return create(config.arch, num_classes, pretrained=config.pretrained, **kwargs)
    except (OSError, RuntimeError) as error:
        if not config.pretrained:
            raise
        raise CheckpointError(
            f"could not fetch the ImageNet weights of {config.arch} ({type(error).__name__}: {error}). "
            f"Offline, download them elsewhere and pass --pretrained-file PATH, or train from scratch with "
            f"--no-pretrained") from error


class Trainer:
    """One training run: builds data, model and optimizer from a config and runs or resumes it."""

    def __init__(self, config: TrainConfig, run_dir: Path, runtime: Runtime) -> None:
        self.config = config
        self.run_dir = run_dir
        self.runtime = runtime
        if config.batch_size % runtime.world_size:
            raise ValueError(f"--batch-size {config.batch_size} is not divisible by {runtime.world_size} processes")
        self.local_batch = config.batch_size // runtime.world_size
        self._open_data()
        torch.manual_seed(config.seed)
        self.model = build_model(config, self.num_classes).to(runtime.device)
        self.amp = amp_dtype(config, runtime.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        if runtime.device.type == "cuda" and config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.network: nn.Module = self.model
        if runtime.distributed:
            ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            self.network = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_score = -1.0
        self.last_validation: dict[str, Any] = {}
        self.epoch_sums = [0.0, 0.0, 0.0]  # loss x count, correct, seen of this process, this epoch
        self.stage = -1
        self._enter_stage(0)

    # -- data

    def _open_data(self) -> None:
        config = self.config
        self.train_data, self.val_data = training_splits(config)
        self.class_names = list(self.train_data.class_names)
        self.num_classes = len(self.class_names)
        self.preprocess = Preprocess((config.crop, config.crop), (config.test_resize, config.test_resize))
        transform = TrainTransform.create(config.resize, config.crop, config.hflip)
        main_stage = Stage(FAMILY_LABELS[config.model_family], config.epochs, config.lr,
                           TorchWSOL(self.train_data, transform, seed=config.seed))
        self.stages = [main_stage]
        if config.pretrain_epochs:
            plain = PlainFashion.from_source(config.pretrain_source, config.pretrain_size, config.pretrain_images,
                                             config.seed, config.pretrain_background)
            self.stages.insert(0, Stage("plain classification", config.pretrain_epochs, config.pretrain_lr, plain))

    @property
    def total_epochs(self) -> int:
        return sum(stage.epochs for stage in self.stages)

    def _stage_of(self, epoch: int) -> int:
        """Index of the stage that epoch ``epoch`` (0-based, over all stages) belongs to."""
        end = 0
        for index, stage in enumerate(self.stages):
            end += stage.epochs
            if epoch < end:
                return index
        return len(self.stages) - 1

    def _enter_stage(self, index: int) -> None:
        """Data, sampler, a fresh AdamW and its schedule for stage ``index`` (weights carry over)."""
        if index == self.stage:
            return
        config, runtime = self.config, self.runtime
        stage = self.stages[index]
        self.stage = index
        self.train_set = stage.train_set
        self.sampler = ResumableSampler(self.train_set, runtime.world_size, runtime.rank, config.seed)
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        if self.steps_per_epoch == 0:
            raise DatasetError(f"{len(self.train_set)} training images for the {stage.name} stage are fewer than one "
                               f"batch of {config.batch_size}", str(config.data))
        self.optimizer = make_optimizer(self.model, config, stage.lr)
        self.scheduler = make_scheduler(self.optimizer, config, self.steps_per_epoch, stage.epochs)

    def _train_loader(self) -> DataLoader:
        workers = self.config.workers
        return DataLoader(
            self.train_set, batch_size=self.local_batch, sampler=self.sampler, num_workers=workers,
            collate_fn=collate, drop_last=True, pin_memory=self.runtime.device.type == "cuda",
            worker_init_fn=_ignore_sigint if workers else None,
            generator=torch.Generator().manual_seed(self.config.seed),  # keeps the global RNG untouched
        )

    def eval_loader(self, dataset: WSOLDataset) -> DataLoader:
        workers = self.config.workers
        return DataLoader(TorchWSOL(dataset, self.preprocess), batch_size=max(1, self.local_batch), shuffle=False,
                          num_workers=workers, collate_fn=collate,
                          worker_init_fn=_ignore_sigint if workers else None)

    # -- checkpoints

    def model_info(self, evaluation: dict[str, Any] | None = None) -> ModelInfo:
        return ModelInfo(
            arch=self.config.arch, num_classes=self.num_classes, timm_kwargs=self.config.timm_kwargs(),
            class_names=self.class_names, preprocess=self.preprocess.to_config(),
            recipe={**self.config.to_dict(), "epochs_done": self.epoch, "steps_done": self.global_step},
            evaluation=evaluation or {}, family=self.config.model_family,
        )

    def state(self) -> dict[str, Any]:
        rng = rng_state()
        if self.runtime.distributed:
            gathered: list[Any] = [None] * self.runtime.world_size
            dist.all_gather_object(gathered, rng)
            rng_all = gathered
        else:
            rng_all = [rng]
        return {
            "epoch_sums": torch.tensor(self.epoch_sums, dtype=torch.float64),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": rng_all,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_score": self.best_score,
            "data_order": {"seed": self.config.seed, "epoch": self.epoch,
                           "images_done": self.step_in_epoch * self.config.batch_size},
            "world_size": self.runtime.world_size,
            "config": json.dumps(self.config.to_dict()),
        }

    def save_state(self) -> None:
        state = self.state()  # every rank takes part in gathering the RNG states
        if self.runtime.main:
            atomic_torch_save(state, self.run_dir / STATE_FILE)

    def load_state(self, state: dict[str, Any]) -> None:
        load_state(self.model, state["model"], f"{self.run_dir / STATE_FILE} (the resume state)")
        self._enter_stage(self._stage_of(int(state["epoch"])))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._apply_hyperparameters()
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        set_rng_state(rngs[self.runtime.rank] if self.runtime.rank < len(rngs) else rngs[0])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.best_score = float(state["best_score"])
        self.epoch_sums = state["epoch_sums"].tolist()

    def _apply_hyperparameters(self) -> None:
        """The config's AdamW settings and peak rate over those of a loaded state, so that options given
        with --resume take effect as config.json records them (with none given, nothing changes)."""
        config, peak = self.config, self.stages[self.stage].lr
        rate = peak * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group, decay in zip(self.optimizer.param_groups, (config.weight_decay, 0.0), strict=True):
            group.update(weight_decay=decay, betas=(config.beta1, config.beta2), eps=config.eps, initial_lr=peak,
                         lr=rate)
        self.scheduler.base_lrs = [peak] * len(self.optimizer.param_groups)

    def _log(self, record: dict[str, Any]) -> None:
        if self.runtime.main:
            with (self.run_dir / METRICS_FILE).open("a") as out:
                out.write(json.dumps(record) + "\n")

    def _trim_metrics(self) -> None:
        """Forget log lines written after the state being resumed (a kill between log and state)."""
        path = self.run_dir / METRICS_FILE
        if self.runtime.main and path.exists():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            kept = []
            for number, line in enumerate(lines, 1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    if number == len(lines):  # the last line, cut short by a kill or a full disk: not a record
                        break
                    raise CheckpointError(f"{path}:{number}: not a JSON record ({error}); fix or delete "
                                          "that line to resume") from error
                if record.get("step", 0) <= self.global_step:
                    kept.append(line)
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    # -- loop

    def fit(self, interrupt: Interrupt) -> dict[str, Any]:
        """Train to the last epoch (or ``max_steps``); returns the last validation."""
        config = self.config
        self._trim_metrics()
        if self.global_step == 0 and self.step_in_epoch == 0:
            self.save_state()  # a loadable state exists from the very start
        self.network.train()
        while self.epoch < self.total_epochs:
            if config.max_steps and self.global_step >= config.max_steps:
                break
            self._enter_stage(self._stage_of(self.epoch))
            self._train_epoch(interrupt)
            if self.step_in_epoch < self.steps_per_epoch:  # stopped by max_steps inside the epoch
                self.save_state()
                break
            self._end_epoch()
        return self.last_validation

    def _train_epoch(self, interrupt: Interrupt) -> None:
        config, runtime = self.config, self.runtime
        self.sampler.set_epoch(self.epoch)
        self.train_set.set_epoch(self.epoch)
        self.sampler.skip = self.step_in_epoch * self.local_batch
        name = f"{self.stages[self.stage].name}, " if len(self.stages) > 1 else ""
        bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch,
                   desc=f"{name}epoch {self.epoch + 1}/{self.total_epochs}",
                   disable=not (runtime.main and config.progress), dynamic_ncols=True, file=sys.stderr)
        if self.step_in_epoch == 0:
            self.epoch_sums = [0.0, 0.0, 0.0]
        loss_sum, correct, seen = self.epoch_sums  # carried over a resume inside the epoch
        resumed_seen = seen
        started = time.perf_counter()
        rate = 0.0
        for batch in self._train_loader():
            images = batch["image"].to(runtime.device, non_blocking=True)
            labels = batch["label"].to(runtime.device, non_blocking=True)
            if runtime.device.type == "cuda" and config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            result = train_step(self.network, images, labels, self.optimizer, scaler=self.scaler,
                                autocast_dtype=self.amp, label_smoothing=config.label_smoothing,
                                grad_clip=config.grad_clip)
            self.scheduler.step()
            self.step_in_epoch += 1
            self.global_step += 1
            loss_sum += result.loss * result.count
            correct += result.correct
            seen += result.count
            self.epoch_sums = [loss_sum, correct, seen]
            rate = (seen - resumed_seen) * runtime.world_size / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", img_s=f"{rate:.0f}",
                            lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            bar.update()
            stop = interrupt.requested(runtime)
            if stop or (config.save_every and self.global_step % config.save_every == 0):
                self.save_state()
            if stop:
                bar.close()
                raise Interrupted(interrupt.signum or signal.SIGTERM, self.run_dir)
            if config.max_steps and self.global_step >= config.max_steps:
                break
        bar.close()
        if runtime.distributed:  # the epoch's figures over all processes, not rank 0's share
            totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=runtime.device)
            dist.all_reduce(totals)
            loss_sum, correct, seen = totals.tolist()
        self.train_summary = {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                              "images_per_s": rate}

    def _end_epoch(self) -> None:
        config, runtime = self.config, self.runtime
        self.epoch += 1
        self.step_in_epoch = 0
        validation: dict[str, Any] = {}
        if runtime.main:
            validation = validate(self.model, self.eval_loader(self.val_data), config.thresholds(),
                                  config.threshold, self.amp)
            # Only localization-stage epochs compete for best (the first stage never saw the localization
            # set), on Top-1 Loc at the epoch's best validation threshold: a fixed threshold would favour
            # epochs whose maps happen to suit it.
            score = validation["top1_loc_best"] if self.stage == len(self.stages) - 1 else -1.0
            info = self.model_info({"split": self.val_data.split, **validation})
            save_checkpoint(self.model, info, self.run_dir / "last.safetensors")
            if score > self.best_score:
                self.best_score = score
                save_checkpoint(self.model, info, self.run_dir / "best.safetensors")
        if runtime.distributed:
            best = torch.tensor([self.best_score], device=runtime.device)
            dist.broadcast(best, 0)
            self.best_score = float(best.item())
        self.save_state()
        self.last_validation = validation
        if runtime.main:
            record = {"epoch": self.epoch, "stage": self.stages[self.stage].name, "step": self.global_step,
                      **getattr(self, "train_summary", {}),
                      **{f"val_{k}": v for k, v in validation.items() if k != "curve"},
                      "val_gt_known_curve": validation.get("curve", {}).get("gt_known")}
            self._log(record)
            tqdm.write(f"epoch {self.epoch}: loss {record.get('train_loss', 0):.3f}, val top-1 "
                       f"{validation['top1_cls']:.1%}, GT-known Loc {validation['gt_known_loc']:.1%} "
                       f"(CAM threshold {config.threshold}), best {validation['gt_known_loc_best']:.1%} "
                       f"at {validation['best_threshold']}", file=sys.stderr)

    def finish(self) -> dict[str, Any] | None:
        """Pick the final checkpoint on fresh validation, evaluate it on the test split at the threshold
        chosen on validation, and export it.

        The candidates are the saved best and last epochs, validated again rather than trusted from
        their epoch's record: the choice and the threshold then follow the current map code, so
        ``--resume`` on a finished run re-exports it after a change there.
        """
        config = self.config
        if not self.runtime.main:
            return None
        best_path = self.run_dir / "best.safetensors"
        if not best_path.exists():
            return None
        loader = self.eval_loader(self.val_data)
        chosen = None
        for path in (best_path, self.run_dir / "last.safetensors"):  # in this order: the best wins ties
            if not path.exists():
                continue
            info, state = read_checkpoint(path)
            model = build_model(dataclasses.replace(config, pretrained=False, pretrained_file=""), self.num_classes)
            load_state(model, state, str(path))
            model.to(self.runtime.device).eval()
            validated = validate(model, loader, config.thresholds(), config.threshold, self.amp)
            if chosen is None or validated["top1_loc_best"] > chosen[2]["top1_loc_best"]:
                chosen = (model, info, validated)
        model, info, validated = chosen
        validation = {"split": self.val_data.split, **{k: v for k, v in validated.items() if k != "curve"}}
        evaluation: dict[str, Any] = {"validation": validation, "recipe": "train/run.py --preset "
                                      f"{config.preset}" if config.preset else "train/run.py"}
        if config.test_split:
            chosen = float(validation["best_threshold"])
            test_data = open_dataset(config.data, config.test_split, config.dataset_kind, config.on_error)
            loader = self.eval_loader(test_data)
            test = evaluate_split(model, loader, self.num_classes, chosen)
            if chosen != config.threshold:
                test[f"gt_known_loc_at_{config.threshold}"] = evaluate_split(
                    model, loader, self.num_classes, config.threshold)["gt_known_loc"]
            evaluation["test"] = {"split": config.test_split, "cam_threshold_from": "validation split", **test}
            tqdm.write(f"test ({test['images']} images, CAM threshold {chosen} chosen on validation): top-1 "
                       f"{test['top1_cls']:.1%}, GT-known Loc {test['gt_known_loc']:.1%}, "
                       f"top-1 Loc {test['top1_loc']:.1%}", file=sys.stderr)
        info.evaluation = evaluation
        save_checkpoint(model, info, best_path)
        if config.export:
            save_checkpoint(model, info, Path(config.export))
        return evaluation


# ---------------------------------------------------------------- entry points


def prepare_run_dir(config: TrainConfig) -> Path:
    name = config.name or f"{config.preset or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(config.output) / name


def ensure_data(config: TrainConfig, main: bool) -> None:
    """Generate the embedded benchmark where the config asks for it and it is missing.

    A benchmark already there must have been generated with the sizes and seed asked for, so a
    result is never reported on other images than its config says.
    """
    if not config.generate:
        return
    from .datasets.fashion import differences, generate

    wanted = benchmark_config(config)
    root = Path(config.data)
    if (root / "images.txt").exists():
        differs = differences(root, wanted)
        if differs:
            shown = ", ".join(f"{k} {a} (want {b})" for k, (a, b) in differs.items())
            raise DatasetError(f"this generated benchmark differs from the one asked for: {shown}; "
                               "delete it to regenerate, or pass --no-generate to use it as it is", str(root))
        return
    if main:
        generate(root, wanted, progress=config.progress)
    if dist.is_initialized():
        dist.barrier()


def benchmark_config(config: TrainConfig) -> BenchmarkConfig:
    """The embedded benchmark a run's config generates (its sizes, canvas and seed)."""
    from .datasets.fashion import BenchmarkConfig

    return BenchmarkConfig(train=config.generate_train, test=config.generate_test, canvas=config.canvas,
                           seed=config.seed)


def train(config: TrainConfig, resume: str | Path | None = None) -> Path:
    """Run (or resume) training; returns the run folder. Raises ``Interrupted`` after a signal."""
    runtime = setup_runtime(config)
    state = None
    if resume is not None:
        run_dir = Path(resume)
        if run_dir.is_file():
            run_dir = run_dir.parent
        if (run_dir / STATE_FILE).exists():
            state = load_state_file(run_dir / STATE_FILE)
        else:
            work = [name for name in WORK_FILES if (run_dir / name).is_file() and (run_dir / name).stat().st_size]
            if work:
                raise CheckpointError(f"{run_dir} holds {', '.join(work)} but no {STATE_FILE}, so it cannot be "
                                      "continued; resuming would restart it from scratch over them. "
                                      "Start a new run with another --name")
        if runtime.main:
            for leftover in run_dir.glob(".*.tmp"):  # a write cut short by a kill; the renamed files are intact
                leftover.unlink()
    else:
        run_dir = prepare_run_dir(config)
        held = [name for name in (STATE_FILE, CONFIG_FILE, *WORK_FILES) if (run_dir / name).exists()]
        if held and runtime.main:
            raise ValueError(f"{run_dir} already holds a run ({', '.join(held)}); resume it with --resume {run_dir} "
                             "or pick --name")
    ensure_data(config, runtime.main)
    trainer = Trainer(config, run_dir, runtime)  # bad data or weights fail here, before any folder exists
    if state is not None:
        trainer.load_state(state)  # a state that does not fit the config fails here, before config.json changes
    if runtime.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
    with Interrupt() as interrupt:
        trainer.fit(interrupt)
        if trainer.epoch >= trainer.total_epochs:
            trainer.finish()
    if runtime.distributed:
        dist.barrier()
    return run_dir


def resume_config(resume: str | Path) -> TrainConfig:
    """The config saved in a run folder (or next to a state file)."""
    run_dir = Path(resume)
    if run_dir.is_file():
        run_dir = run_dir.parent
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: no config.json here, so not a run folder to resume")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: not a training config ({error})") from error


__all__ = [
    "Interrupted", "ResumableSampler", "StepResult", "Trainer", "benchmark_config", "evaluate_split", "holdout_split",
    "load_state_file",
    "lr_factor", "make_optimizer", "make_scheduler", "resume_config", "rng_state", "set_rng_state", "train",
    "train_step", "training_splits", "validate",
]
