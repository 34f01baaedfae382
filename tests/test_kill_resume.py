"""Crash safety (issue 8): a real training process killed at random moments always leaves a loadable
state, and resuming after every kill ends with exactly the weights of an uninterrupted run (CPU)."""

from __future__ import annotations

import dataclasses
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tscam_core.checkpoint import read_checkpoint
from tscam_core.testing.kill_resume import start, wait_for_training
from tscam_core.testing.tiny_training import (
    ROOT,
    RUN_SCRIPT,
    cli_args,
    make_dataset,
    python,
    subprocess_env,
    tiny_config,
    weights,
)
from tscam_core.training import CONFIG_FILE, STATE_FILE, load_state_file, train

KILLS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data = make_dataset(tmp_path_factory.mktemp("data") / "fashion")
    out = tmp_path_factory.mktemp("runs")
    config = tiny_config(data, out, "reference", epochs=6, save_every=1)
    return config, train(config)


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(setup):
    config, reference = setup
    victim = dataclasses.replace(config, name="victim")
    run_dir = Path(victim.output) / victim.name
    state_path = run_dir / STATE_FILE
    rng = random.Random(8)
    landed, steps_seen = 0, []
    process = start(cli_args(victim))
    for attempt in range(KILLS):
        if not wait_for_training(process, state_path, since=0 if attempt == 0 else time.time() - 0.5):
            break  # it finished before this kill
        time.sleep(rng.uniform(0.0, 0.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            landed += 1
        process.communicate(timeout=60)
        # After every kill: a state that loads (weights only) and a config, whatever moment it hit.
        state = load_state_file(state_path)
        assert (run_dir / CONFIG_FILE).is_file()
        steps_seen.append(int(state["global_step"]))
        if (run_dir / "last.safetensors").exists():
            read_checkpoint(run_dir / "last.safetensors")
        process = start(["--resume", str(run_dir)])
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-2000:]
    assert landed >= 2, f"only {landed} kills landed during training"
    assert steps_seen == sorted(steps_seen)  # progress is never lost backwards
    expected, resumed = weights(reference / "last.safetensors"), weights(run_dir / "last.safetensors")
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    assert not list(run_dir.glob(".*.tmp"))


def test_sigint_saves_and_exits_cleanly_then_resumes(setup):
    config, reference = setup
    victim = dataclasses.replace(config, name="ctrl-c")
    run_dir = Path(victim.output) / victim.name
    process = start(cli_args(victim))
    assert wait_for_training(process, run_dir / STATE_FILE, since=0)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the run finished before Ctrl-C arrived")
    assert process.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "Traceback" not in err and f"--resume {run_dir}" in err
    state = load_state_file(run_dir / STATE_FILE)
    assert 0 < state["global_step"] < 30
    done = subprocess.run([python(), str(RUN_SCRIPT), "--resume", str(run_dir)], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    expected, resumed = weights(reference / "last.safetensors"), weights(run_dir / "last.safetensors")
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
