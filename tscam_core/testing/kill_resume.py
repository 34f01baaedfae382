"""Kill a real training process at chosen moments, then resume it: the machinery of the crash-safety
test (tests/test_kill_resume.py) and of its figures (scripts/kill_resume.py).

A kill lands in one of three moments, each found by watching the run folder, not by timing alone:
during training (after the process wrote its state at least once), during a checkpoint write
(a temporary file of ``atomic_write`` for the state or a checkpoint present, the kill sent at once) and during a resume's
start-up (before the resumed process wrote any state).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..training import STATE_FILE
from .tiny_training import ROOT, RUN_SCRIPT, python, subprocess_env

MOMENTS = ("training", "checkpoint write", "resume start-up")


def start(args: list[str]) -> subprocess.Popen:
    """``train/run.py ARGS`` in a process of its own (one thread, this checkout's code)."""
    return subprocess.Popen([python(), str(RUN_SCRIPT), *args], cwd=ROOT, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def state_mtime(run_dir: Path) -> float:
    state = run_dir / STATE_FILE
    return state.stat().st_mtime if state.exists() else 0.0


def wait_for_training(process: subprocess.Popen, state: Path, since: float, timeout: float = 120) -> bool:
    """True once this process has written the state file after ``since`` (False if it exited first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if state.exists() and state.stat().st_mtime > since:
            return True
        time.sleep(0.02)
    raise TimeoutError("training did not write its state in time")


#: The temporary files ``atomic_write`` makes while writing the training state or a checkpoint.
CHECKPOINT_TEMPORARIES = (f".{STATE_FILE}.*.tmp", ".*.safetensors.*.tmp")


def temporaries(run_dir: Path) -> set[Path]:
    return {path for pattern in CHECKPOINT_TEMPORARIES for path in run_dir.glob(pattern)}


def wait_for_write(process: subprocess.Popen, run_dir: Path, timeout: float = 120) -> bool:
    """True the moment the state or a checkpoint is being written in ``run_dir`` (False if it exited first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if temporaries(run_dir):
            return True
        if process.poll() is not None:
            return False
    raise TimeoutError("no checkpoint write seen in time")


@dataclass(frozen=True)
class Kill:
    """One SIGKILL: the moment it was aimed at, and what the run folder showed afterwards."""

    aimed: str  # one of MOMENTS
    landed: bool  # False: the process had finished (or, at start-up, had already written its state)
    step: int  # global_step of the state file after the kill (0: none written yet)
    torn_write: bool  # this kill left a new temporary file behind: it hit a write
    loadable: bool  # the state file and last.safetensors (where written) read back after the kill


def kill(process: subprocess.Popen, run_dir: Path, aimed: str, rng: random.Random, since: float) -> Kill:
    """Send SIGKILL at the ``aimed`` moment of ``process`` (started at ``since``, wall-clock)."""
    from ..checkpoint import read_checkpoint
    from ..errors import CheckpointError
    from ..training import load_state_file

    state = run_dir / STATE_FILE
    left_before = temporaries(run_dir)  # an earlier kill's torn write, which the resume removes
    if aimed == "training":
        ready = wait_for_training(process, state, since) and (time.sleep(rng.uniform(0.0, 0.5)) or True)
    elif aimed == "checkpoint write":
        ready = wait_for_write(process, run_dir)
    else:  # resume start-up: torch is still being imported, nothing written yet
        time.sleep(rng.uniform(0.1, 1.0))
        ready = state_mtime(run_dir) <= since
    landed = ready and process.poll() is None
    if landed:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=240)
    torn = bool(temporaries(run_dir) - left_before)
    try:
        step = int(load_state_file(state)["global_step"]) if state.exists() else 0
        if (run_dir / "last.safetensors").exists():
            read_checkpoint(run_dir / "last.safetensors")
        loadable = True
    except CheckpointError as error:
        print(f"after a kill aimed at {aimed}: {error}", file=sys.stderr)
        step, loadable = -1, False
    return Kill(aimed, landed, step, torn, loadable)
