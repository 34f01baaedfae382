"""torchrun with 2 CPU processes (gloo) trains the same model as one process with the same global batch.

Each process takes every other image of the epoch's seeded order (DistributedSampler) and DDP
averages the two half-batch gradients, which is the full-batch mean gradient: the runs differ
only by floating-point summation order. Stated tolerance: after 10 AdamW steps every weight
agrees within 1e-4 absolute (measured: 1.1e-5; weights reach ~1, and a real mismatch, e.g. a wrong
data split or unsynchronised gradients, moves them by ~1e-3 per step at this learning rate).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest

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
from tscam_core.training import STATE_FILE, load_state_file, train

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = make_dataset(tmp_path_factory.mktemp("data") / "fashion")
    out = tmp_path_factory.mktemp("runs")
    # drop_path 0: the two runs draw dropout randomness from different RNG streams per process.
    config = tiny_config(data, out, "one", drop_path=0.0, epochs=2, batch_size=8, save_every=0)
    single = train(config)
    double = dataclasses.replace(config, name="two")
    command = [python(), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(RUN_SCRIPT),
               *cli_args(double)]
    done = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return single, out / "two"


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(runs):
    single, double = runs
    one, two = weights(single / "last.safetensors"), weights(double / "last.safetensors")
    assert one.keys() == two.keys()
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert worst < TOLERANCE, f"largest weight difference {worst:.2e}"
    state_one, state_two = load_state_file(single / STATE_FILE), load_state_file(double / STATE_FILE)
    assert state_one["global_step"] == state_two["global_step"] == 10
    assert state_two["world_size"] == 2 and len(state_two["rng"]) == 2  # each rank's RNG is kept


def test_only_rank_zero_writes_and_validation_agrees(runs):
    single, double = runs
    assert sorted(p.name for p in double.iterdir()) == sorted(p.name for p in single.iterdir())
    lines_one = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    lines_two = [json.loads(x) for x in (double / "metrics.jsonl").read_text().splitlines()]
    assert len(lines_two) == 2  # one line per epoch, not one per process
    for a, b in zip(lines_one, lines_two, strict=True):
        assert a["val_top1_cls"] == pytest.approx(b["val_top1_cls"], abs=1 / 8)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)  # summed over both processes
