"""Training TS-CAM: the step, validation with GT-known localization, and an exactly resumable loop.

A run lives in one folder: ``config.json`` (the resolved config), ``metrics.jsonl`` (one line
per epoch), ``last.safetensors`` / ``best.safetensors`` (this project's checkpoint format) and
``state.pt``, the resume state (model, optimizer, scheduler, AMP scaler, RNG states, position in
the data order). Every file is written to a temporary name and renamed, so a killed run always
leaves the previous complete file. The data order of an epoch depends only on (seed, epoch) and
each image's augmentation only on (seed, epoch, index), so a resumed run skips the batches it
already took and then computes exactly what the uninterrupted run would have.

Modules: ``step`` (one optimizer step, AdamW, the schedule), ``data`` (splits, stages, sampler,
loaders), ``models`` (the model a recipe trains), ``selection`` (validation, the final checkpoint
and threshold), ``run_folder`` (the files above), ``runtime`` (devices, DDP, signals) and
``loop`` (the Trainer and ``train``).
"""

from ..datasets import open_dataset
from .data import (
    ResumableSampler,
    Stage,
    TrainingData,
    benchmark_config,
    ensure_data,
    holdout_split,
    training_splits,
)
from .loop import Progress, Trainer, train
from .models import build_training_model, training_model_info
from .run_folder import (
    CONFIG_FILE,
    METRICS_FILE,
    STATE_FILE,
    WORK_FILES,
    RunFolder,
    load_state_file,
    resume_config,
    rng_state,
    set_rng_state,
)
from .runtime import Interrupt, Interrupted, Runtime, amp_dtype, setup_runtime
from .selection import evaluate_split, finish_run, validate
from .step import Optimization, StepResult, lr_factor, make_optimizer, make_scheduler, train_step

__all__ = [
    "CONFIG_FILE", "METRICS_FILE", "STATE_FILE", "WORK_FILES", "Interrupt", "Interrupted", "Optimization", "Progress",
    "ResumableSampler", "RunFolder", "Runtime", "Stage", "StepResult", "Trainer", "TrainingData", "amp_dtype",
    "benchmark_config", "build_training_model", "ensure_data", "evaluate_split", "finish_run", "holdout_split",
    "load_state_file", "lr_factor", "make_optimizer", "make_scheduler", "open_dataset", "resume_config",
    "rng_state", "set_rng_state", "setup_runtime", "train", "train_step", "training_model_info",
    "training_splits", "validate",
]
