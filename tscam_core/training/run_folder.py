"""A run's folder: config.json, metrics.jsonl, the resume state state.pt, and the checks that keep a
resume or a new run from training over work it does not own."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..checkpoint import read_torch_file
from ..errors import CheckpointError
from ..files import atomic_write
from ..recipes import TrainConfig
from .runtime import Runtime

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
#: Files of trained work: a folder holding any of them is never trained over from scratch.
WORK_FILES = ("last.safetensors", "best.safetensors", METRICS_FILE)


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


def all_rng_states(runtime: Runtime) -> list[dict[str, Any]]:
    """Every process's RNG states, by rank; every rank must call it."""
    rng = rng_state()
    if not runtime.distributed:
        return [rng]
    gathered: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(gathered, rng)
    return gathered


def load_state_file(path: Path) -> dict[str, Any]:
    """The resume state, read with ``weights_only=True``; a damaged file is a clear error."""
    state = read_torch_file(path)
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path}: not a tscam resume state")
    return state


def prepare_run_dir(config: TrainConfig) -> Path:
    name = config.name or f"{config.preset or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(config.output) / name


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


class RunFolder:
    """The files of one run; only the main process writes them."""

    def __init__(self, path: Path, main: bool) -> None:
        self.path = path
        self.main = main

    @classmethod
    def open(cls, config: TrainConfig, resume: str | Path | None, main: bool) -> tuple[RunFolder, dict[str, Any] | None]:
        """The folder to train in and the state to resume from: ``resume``'s (a folder, or a file in it),
        or a new folder named by the config, which must not hold a run yet."""
        if resume is None:
            folder = cls(prepare_run_dir(config), main)
            held = [name for name in (STATE_FILE, CONFIG_FILE, *WORK_FILES) if (folder.path / name).exists()]
            if held and main:
                raise ValueError(f"{folder.path} already holds a run ({', '.join(held)}); resume it with --resume "
                                 f"{folder.path} or pick --name")
            return folder, None
        run_dir = Path(resume)
        if run_dir.is_file():
            run_dir = run_dir.parent
        state = None
        if (run_dir / STATE_FILE).exists():
            state = load_state_file(run_dir / STATE_FILE)
        else:
            work = [name for name in WORK_FILES if (run_dir / name).is_file() and (run_dir / name).stat().st_size]
            if work:
                raise CheckpointError(f"{run_dir} holds {', '.join(work)} but no {STATE_FILE}, so it cannot be "
                                      "continued; resuming would restart it from scratch over them. "
                                      "Start a new run with another --name")
        if main:
            for leftover in run_dir.glob(".*.tmp"):  # a write cut short by a kill; the renamed files are intact
                leftover.unlink()
        return cls(run_dir, main), state

    @property
    def last(self) -> Path:
        return self.path / "last.safetensors"

    @property
    def best(self) -> Path:
        return self.path / "best.safetensors"

    def write_config(self, config: TrainConfig) -> None:
        if self.main:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")

    def save_state(self, state: dict[str, Any]) -> None:
        if self.main:
            atomic_torch_save(state, self.path / STATE_FILE)

    def log(self, record: dict[str, Any]) -> None:
        if self.main:
            with (self.path / METRICS_FILE).open("a") as out:
                out.write(json.dumps(record) + "\n")

    def trim_metrics(self, global_step: int) -> None:
        """Forget log lines written after the state being resumed (a kill between log and state)."""
        path = self.path / METRICS_FILE
        if self.main and path.exists():
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
                if record.get("step", 0) <= global_step:
                    kept.append(line)
            atomic_write_text(path, "".join(line + "\n" for line in kept))
