"""A run's images: its splits, its stages, the data order that resumes exactly and the loaders."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoint import FAMILY_LABELS
from ..datasets import TorchWSOL, TrainTransform, WSOLDataset, collate, open_dataset
from ..errors import DatasetError
from ..pretraining import PlainFashion
from ..recipes import TrainConfig
from ..transforms import Preprocess
from .runtime import ignore_sigint

if TYPE_CHECKING:
    from ..datasets.fashion import BenchmarkConfig


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


def ensure_data(config: TrainConfig, main: bool) -> None:
    """Generate the embedded benchmark where the config asks for it and it is missing.

    A benchmark already there must have been generated with the sizes and seed asked for, so a
    result is never reported on other images than its config says.
    """
    if not config.generate:
        return
    from ..datasets.fashion import differences, generate

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
    """The embedded benchmark a run's config generates (its sizes, validation split, canvas and seed)."""
    from ..datasets.fashion import BenchmarkConfig

    return BenchmarkConfig(train=config.generate_train, test=config.generate_test, canvas=config.canvas,
                           seed=config.seed, val=config.generate_val)


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


@dataclass
class Stage:
    """A part of the schedule with its own data, epochs and peak rate (a fresh AdamW each)."""

    name: str
    epochs: int
    lr: float
    train_set: TorchWSOL | PlainFashion


class TrainingData:
    """The images of a run's config: its stages (an optional plain-classification stage, then
    localization training), its validation split, and loaders of this process's share of them."""

    def __init__(self, config: TrainConfig, local_batch: int, pin_memory: bool) -> None:
        self.config = config
        self.local_batch = local_batch
        self.pin_memory = pin_memory
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

    def stage_of(self, epoch: int) -> int:
        """Index of the stage that epoch ``epoch`` (0-based, over all stages) belongs to."""
        end = 0
        for index, stage in enumerate(self.stages):
            end += stage.epochs
            if epoch < end:
                return index
        return len(self.stages) - 1

    def sampler(self, stage: Stage, rank: int, world_size: int) -> tuple[ResumableSampler, int]:
        """This process's data order over ``stage`` and the optimizer steps of one of its epochs."""
        sampler = ResumableSampler(stage.train_set, world_size, rank, self.config.seed)
        steps_per_epoch = len(sampler) // self.local_batch
        if steps_per_epoch == 0:
            raise DatasetError(f"{len(stage.train_set)} training images for the {stage.name} stage are fewer than "
                               f"one batch of {self.config.batch_size}", str(self.config.data))
        return sampler, steps_per_epoch

    def train_loader(self, stage: Stage, sampler: ResumableSampler) -> DataLoader:
        workers = self.config.workers
        return DataLoader(
            stage.train_set, batch_size=self.local_batch, sampler=sampler, num_workers=workers,
            collate_fn=collate, drop_last=True, pin_memory=self.pin_memory,
            worker_init_fn=ignore_sigint if workers else None,
            generator=torch.Generator().manual_seed(self.config.seed),  # keeps the global RNG untouched
        )

    def eval_loader(self, dataset: WSOLDataset) -> DataLoader:
        workers = self.config.workers
        return DataLoader(TorchWSOL(dataset, self.preprocess), batch_size=max(1, self.local_batch), shuffle=False,
                          num_workers=workers, collate_fn=collate,
                          worker_init_fn=ignore_sigint if workers else None)
