"""The training loop: epochs of steps, validation and checkpoints at each epoch's end, a state saved
often enough that a killed run continues exactly where it stopped."""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..checkpoint import ModelInfo, load_state, save_checkpoint
from ..cnn_cam import CNNCAM
from ..errors import CheckpointError
from ..model import TSCAM
from ..recipes import TrainConfig
from .data import TrainingData, ensure_data
from .models import build_training_model, stage_network, training_model_info
from .run_folder import STATE_FILE, RunFolder, all_rng_states, set_rng_state
from .runtime import Interrupt, Interrupted, Runtime, setup_runtime
from .selection import finish_run, validate
from .step import Optimization


@dataclass
class Progress:
    """How far a run got: what the resume state records besides weights, optimizer and RNGs."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_score: float = -1.0
    epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss x count, correct, seen

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        return cls(int(state["epoch"]), int(state["step_in_epoch"]), int(state["global_step"]),
                   float(state["best_score"]), state["epoch_sums"].tolist())


class Trainer:
    """One training run: its data, model and optimizer from a config, trained epoch by epoch."""

    def __init__(self, config: TrainConfig, folder: RunFolder, runtime: Runtime) -> None:
        self.config = config
        self.folder = folder
        self.runtime = runtime
        if config.batch_size % runtime.world_size:
            raise ValueError(f"--batch-size {config.batch_size} is not divisible by {runtime.world_size} processes")
        self.local_batch = config.batch_size // runtime.world_size
        self.data = TrainingData(config, self.local_batch, runtime.device.type == "cuda")
        torch.manual_seed(config.seed)
        model = build_training_model(config, self.data.num_classes).to(runtime.device)
        self.optimization = Optimization(model, config, runtime)
        self.classifier = stage_network(config, model, self.data.num_classes)
        self.progress = Progress()
        self.last_validation: dict[str, Any] = {}
        self.train_summary: dict[str, float] = {}
        self.stage = -1
        self._enter_stage(0)

    @property
    def model(self) -> TSCAM | CNNCAM:
        return self.optimization.model

    def _enter_stage(self, index: int) -> None:
        """Data order, a fresh AdamW and its schedule for stage ``index`` (weights carry over): the first of
        two stages trains ``self.classifier`` where there is one, the localization stage the model, its head
        at ``--head-lr``."""
        if index == self.stage:
            return
        stage = self.data.stages[index]
        self.stage = index
        self.sampler, self.steps_per_epoch = self.data.sampler(stage, self.runtime.rank, self.runtime.world_size)
        localization = index == len(self.data.stages) - 1
        self.optimization.start_stage(stage.lr, self.steps_per_epoch, stage.epochs,
                                      None if localization else self.classifier,
                                      self.config.head_lr if localization else 0.0)

    # -- the resume state

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs to compute what this one would have; every rank must call it."""
        progress, config = self.progress, self.config
        rng_all = all_rng_states(self.runtime)
        return {
            "epoch_sums": torch.tensor(progress.epoch_sums, dtype=torch.float64),
            "model": self.model.state_dict(),
            **({} if self.classifier is None else {"class_token_head": self.classifier.head.state_dict()}),
            **self.optimization.state_dict(),
            "rng": rng_all,
            "epoch": progress.epoch,
            "step_in_epoch": progress.step_in_epoch,
            "global_step": progress.global_step,
            "best_score": progress.best_score,
            "data_order": {"seed": config.seed, "epoch": progress.epoch,
                           "images_done": progress.step_in_epoch * config.batch_size},
            "world_size": self.runtime.world_size,
            "config": json.dumps(config.to_dict()),
        }

    def save_state(self) -> None:
        self.folder.save_state(self.state())

    def load_state(self, state: dict[str, Any]) -> None:
        where = f"{self.folder.path / STATE_FILE} (the resume state)"
        load_state(self.model, state["model"], where)
        if self.classifier is not None:
            if "class_token_head" not in state:
                raise CheckpointError(f"{where}: no class-token head, so it was not trained with --pretrain-head token")
            load_state(self.classifier.head, state["class_token_head"], where)
        self._enter_stage(self.data.stage_of(int(state["epoch"])))
        self.optimization.load_state_dict(state)
        rngs = state["rng"]
        set_rng_state(rngs[self.runtime.rank] if self.runtime.rank < len(rngs) else rngs[0])
        self.progress = Progress.from_state(state)

    def model_info(self, evaluation: dict[str, Any] | None = None) -> ModelInfo:
        return training_model_info(self.config, self.data.class_names, self.data.preprocess, self.progress.epoch,
                                   self.progress.global_step, evaluation)

    # -- loop

    def fit(self, interrupt: Interrupt) -> dict[str, Any]:
        """Train to the last epoch (or ``max_steps``); returns the last validation."""
        config, progress = self.config, self.progress
        self.folder.trim_metrics(progress.global_step)
        if progress.global_step == 0 and progress.step_in_epoch == 0:
            self.save_state()  # a loadable state exists from the very start
        self.optimization.network.train()
        while progress.epoch < self.data.total_epochs:
            if config.max_steps and progress.global_step >= config.max_steps:
                break
            self._enter_stage(self.data.stage_of(progress.epoch))
            self._train_epoch(interrupt)
            if progress.step_in_epoch < self.steps_per_epoch:  # stopped by max_steps inside the epoch
                self.save_state()
                break
            self._end_epoch()
        return self.last_validation

    def _train_epoch(self, interrupt: Interrupt) -> None:
        config, runtime, progress = self.config, self.runtime, self.progress
        stage = self.data.stages[self.stage]
        self.sampler.set_epoch(progress.epoch)
        stage.train_set.set_epoch(progress.epoch)
        self.sampler.skip = progress.step_in_epoch * self.local_batch
        name = f"{stage.name}, " if len(self.data.stages) > 1 else ""
        bar = tqdm(total=self.steps_per_epoch, initial=progress.step_in_epoch,
                   desc=f"{name}epoch {progress.epoch + 1}/{self.data.total_epochs}",
                   disable=not (runtime.main and config.progress), dynamic_ncols=True, file=sys.stderr)
        if progress.step_in_epoch == 0:
            progress.epoch_sums = [0.0, 0.0, 0.0]
        loss_sum, correct, seen = progress.epoch_sums  # carried over a resume inside the epoch
        resumed_seen = seen
        started = time.perf_counter()
        rate = 0.0
        for batch in self.data.train_loader(stage, self.sampler):
            images = batch["image"].to(runtime.device, non_blocking=True)
            labels = batch["label"].to(runtime.device, non_blocking=True)
            if runtime.device.type == "cuda" and config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            result = self.optimization.step(images, labels)
            progress.step_in_epoch += 1
            progress.global_step += 1
            loss_sum += result.loss * result.count
            correct += result.correct
            seen += result.count
            progress.epoch_sums = [loss_sum, correct, seen]
            rate = (seen - resumed_seen) * runtime.world_size / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", img_s=f"{rate:.0f}",
                            lr=f"{self.optimization.lr:.2e}")
            bar.update()
            stop = interrupt.requested(runtime)
            if stop or (config.save_every and progress.global_step % config.save_every == 0):
                self.save_state()
            if stop:
                bar.close()
                raise Interrupted(interrupt.signum or signal.SIGTERM, self.folder.path)
            if config.max_steps and progress.global_step >= config.max_steps:
                break
        bar.close()
        if runtime.distributed:  # the epoch's figures over all processes, not rank 0's share
            totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=runtime.device)
            dist.all_reduce(totals)
            loss_sum, correct, seen = totals.tolist()
        self.train_summary = {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                              "images_per_s": rate}

    def _end_epoch(self) -> None:
        config, runtime, progress = self.config, self.runtime, self.progress
        progress.epoch += 1
        progress.step_in_epoch = 0
        validation: dict[str, Any] = {}
        if runtime.main:
            val_data = self.data.val_data
            validation = validate(self.model, self.data.eval_loader(val_data), config.thresholds(),
                                  config.threshold, self.optimization.amp)
            # Only localization-stage epochs compete for best (the first stage never saw the localization
            # set), on Top-1 Loc at the epoch's best validation threshold: a fixed threshold would favour
            # epochs whose maps happen to suit it.
            score = validation["top1_loc_best"] if self.stage == len(self.data.stages) - 1 else -1.0
            info = self.model_info({"split": val_data.split, **validation})
            save_checkpoint(self.model, info, self.folder.last)
            if score > progress.best_score:
                progress.best_score = score
                save_checkpoint(self.model, info, self.folder.best)
        if runtime.distributed:
            best = torch.tensor([progress.best_score], device=runtime.device)
            dist.broadcast(best, 0)
            progress.best_score = float(best.item())
        self.save_state()
        self.last_validation = validation
        if runtime.main:
            record = {"epoch": progress.epoch, "stage": self.data.stages[self.stage].name,
                      "step": progress.global_step, **self.train_summary,
                      **{f"val_{k}": v for k, v in validation.items() if k != "curve"},
                      "val_gt_known_curve": validation.get("curve", {}).get("gt_known")}
            self.folder.log(record)
            tqdm.write(f"epoch {progress.epoch}: loss {record.get('train_loss', 0):.3f}, val top-1 "
                       f"{validation['top1_cls']:.1%}, GT-known Loc {validation['gt_known_loc']:.1%} "
                       f"(CAM threshold {config.threshold}), best {validation['gt_known_loc_best']:.1%} "
                       f"at {validation['best_threshold']}", file=sys.stderr)

    def finish(self) -> dict[str, Any] | None:
        """The final checkpoint, tested and exported (see ``finish_run``); on the main process only."""
        if not self.runtime.main:
            return None
        return finish_run(self.config, self.folder, self.data, self.runtime.device, self.optimization.amp)


def train(config: TrainConfig, resume: str | Path | None = None) -> Path:
    """Run (or resume) training; returns the run folder. Raises ``Interrupted`` after a signal."""
    runtime = setup_runtime(config)
    folder, state = RunFolder.open(config, resume, runtime.main)
    ensure_data(config, runtime.main)
    trainer = Trainer(config, folder, runtime)  # bad data or weights fail here, before any folder exists
    if state is not None:
        trainer.load_state(state)  # a state that does not fit the config fails here, before config.json changes
    folder.write_config(config)
    with Interrupt() as interrupt:
        trainer.fit(interrupt)
        if trainer.progress.epoch >= trainer.data.total_epochs:
            trainer.finish()
    if runtime.distributed:
        dist.barrier()
    return folder.path
