"""Where a training process runs: device, threads, the torchrun process group, mixed precision, signals."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..recipes import TrainConfig


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


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or config.amp == "none":
        return None
    return torch.bfloat16 if config.amp == "bf16" else torch.float16


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


def ignore_sigint(_worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which saves and stops the run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
