"""A run folder's saved work survives every restart: a failed resume, a deleted state.pt, damaged JSON.

Each test works on a copy of one finished tiny run, so that it can damage the copy freely.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat

import pytest

from train.run import main
from tscam_core.errors import CheckpointError
from tscam_core.testing.tiny_training import make_dataset, tiny_config
from tscam_core.training import CONFIG_FILE, METRICS_FILE, STATE_FILE, load_state_file, train


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch run, written under umask 022 (so its files' modes are known)."""
    data = make_dataset(tmp_path_factory.mktemp("data") / "fashion")
    export = tmp_path_factory.mktemp("export") / "exported.safetensors"
    config = tiny_config(data, tmp_path_factory.mktemp("runs"), "run", epochs=1, export=str(export))
    previous = os.umask(0o022)
    try:
        run_dir = train(config)
    finally:
        os.umask(previous)
    return dataclasses.replace(config, export=""), run_dir, export


def _copy(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def test_run_files_follow_the_umask_not_mkstemps_0600(finished):
    _, run_dir, export = finished
    for path in (run_dir / CONFIG_FILE, run_dir / STATE_FILE, run_dir / "best.safetensors", export):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_resume_with_another_depth_fails_before_config_json_changes(finished, tmp_path, capsys):
    _, run_dir, _ = finished
    copy = _copy(run_dir, tmp_path)
    before = (copy / CONFIG_FILE).read_text()
    assert main(["--resume", str(copy), "--depth", "3", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "state.pt" in err and "does not fit this model" in err and "blocks.2" in err
    assert (copy / CONFIG_FILE).read_text() == before  # the run can still be resumed as it was


def test_optimizer_options_given_with_resume_take_effect(finished, tmp_path):
    config, run_dir, _ = finished
    copy = _copy(run_dir, tmp_path)
    resumed = dataclasses.replace(config, epochs=2, lr=2e-4, weight_decay=0.3, beta2=0.95, schedule="constant",
                                  warmup_epochs=0.0)
    train(dataclasses.replace(resumed, max_steps=load_state_file(copy / STATE_FILE)["global_step"] + 1), resume=copy)
    groups = load_state_file(copy / STATE_FILE)["optimizer"]["param_groups"]
    assert [group["lr"] for group in groups] == [2e-4, 2e-4]
    assert [group["weight_decay"] for group in groups] == [0.3, 0.0]
    assert all(tuple(group["betas"]) == (0.9, 0.95) for group in groups)


def test_a_new_run_never_trains_over_checkpoints_whose_state_was_deleted(finished, tmp_path):
    config, run_dir, _ = finished
    copy = _copy(run_dir, tmp_path)
    (copy / STATE_FILE).unlink()
    best, metrics = (copy / "best.safetensors").read_bytes(), (copy / METRICS_FILE).read_text()
    with pytest.raises(ValueError, match="already holds a run"):
        train(dataclasses.replace(config, output=str(tmp_path), name="run", lr=3e-3))
    with pytest.raises(CheckpointError, match="no state.pt"):  # and resuming would restart it from scratch
        train(dataclasses.replace(config, max_steps=3), resume=copy)
    assert (copy / "best.safetensors").read_bytes() == best and (copy / METRICS_FILE).read_text() == metrics


def test_a_metrics_line_cut_short_is_dropped_on_resume(finished, tmp_path):
    config, run_dir, _ = finished
    copy = _copy(run_dir, tmp_path)
    whole = (copy / METRICS_FILE).read_text()
    with (copy / METRICS_FILE).open("a") as out:
        out.write('{"epoch": 2, "stage": "TS-C')  # a kill or a full disk in the middle of a line
    train(dataclasses.replace(config, max_steps=0), resume=copy)
    assert (copy / METRICS_FILE).read_text() == whole


def test_a_damaged_line_before_the_last_is_named(finished, tmp_path):
    config, run_dir, _ = finished
    copy = _copy(run_dir, tmp_path)
    lines = (copy / METRICS_FILE).read_text().splitlines()
    (copy / METRICS_FILE).write_text("\n".join(["{oops", *lines]) + "\n")
    with pytest.raises(CheckpointError, match=f"{METRICS_FILE}:1: not a JSON record"):
        train(dataclasses.replace(config, max_steps=0), resume=copy)


def test_a_damaged_config_json_is_named(finished, tmp_path, capsys):
    _, run_dir, _ = finished
    copy = _copy(run_dir, tmp_path)
    (copy / CONFIG_FILE).write_text('{"depth": \n')
    assert main(["--resume", str(copy)]) == 2
    assert f"{copy / CONFIG_FILE}: not valid JSON" in capsys.readouterr().err
