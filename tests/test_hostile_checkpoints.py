"""The issue-20 hostile checkpoints: one-line CheckpointErrors naming the fault, before any big allocation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tiny_model, tiny_info

from tscam_core import CheckpointError, load_model
from tscam_core.evaluate import main as evaluate_main
from tscam_core.testing.bad_checkpoints import HostileCheckpoint, hostile_checkpoints

CORPUS = {case.name: case for case in hostile_checkpoints(make_tiny_model(), tiny_info())}
#: The cases whose metadata claims sizes that, built, would take gigabytes.
HUGE = ("num_classes_1e8", "num_classes_not_the_file", "vit_4096_wide_24_blocks", "vit_4096_wide",
        "img_size_100000", "input_size_100000", "input_size_not_the_grid", "resize_50000")
ROOT = Path(__file__).resolve().parents[1]


def written(case: HostileCheckpoint, folder: Path) -> Path:
    path = folder / case.name
    path.write_bytes(case.data)
    return path


def test_the_corpus_covers_the_issue():
    for needed in ("metadata_list", "metadata_number", "arch_number", "evaluation_list", "threshold_text",
                   "input_size_text", "nan_weights", "inf_weights", "text.pth", "empty.pth", "truncated", *HUGE):
        assert any(name.startswith(needed) for name in CORPUS), needed
    assert all(len(case.data) < 2**20 for case in CORPUS.values())  # the sizes are claimed, not held


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_load_model_refuses_with_one_line_naming_the_fault(tmp_path: Path, name: str):
    case = CORPUS[name]
    path = written(case, tmp_path)
    if not case.names:
        assert load_model(path).num_classes == 5
        return
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path))
    assert case.names in message


def test_hostile_sizes_are_refused_before_any_big_allocation(tmp_path: Path):
    """In a fresh process (its resident peak not raised by other tests), under an address-space limit of
    1 GiB over what it holds after imports: building any of these models would fail that limit or the
    200 MiB bound on peak growth; refusing them first passes both."""
    paths = [str(written(CORPUS[f"{name}.safetensors"], tmp_path)) for name in HUGE]
    script = """
import json, resource, sys
import torch
from tscam_core import CheckpointError, load_model
torch.set_num_threads(1)
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, resource.RLIM_INFINITY))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
errors = {}
for path in sys.argv[1:]:
    try:
        load_model(path)
        errors[path] = "loaded"
    except CheckpointError as error:
        errors[path] = str(error)
growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(json.dumps({"errors": errors, "growth": growth}))
"""
    done = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    for name, path in zip(HUGE, paths, strict=True):
        assert CORPUS[f"{name}.safetensors"].names in report["errors"][path], name
    assert report["growth"] < 200 * 2**20


@pytest.mark.parametrize("name", ["metadata_list.safetensors", "arch_number.safetensors",
                                  "evaluation_list.safetensors", "threshold_text.safetensors",
                                  "input_size_text.safetensors", "nan_weights.safetensors", "text.pth"])
def test_the_evaluate_cli_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, name: str):
    path = written(CORPUS[name], tmp_path)
    code = evaluate_main(["--checkpoint", str(path), "--dataset", str(tmp_path / "no-data"), "--split", "test",
                          "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and error.startswith(f"error: {path}: ")
    assert CORPUS[name].names in error


@pytest.mark.parametrize("name", ["metadata_number.safetensors", "evaluation_list.safetensors",
                                  "threshold_text.safetensors", "inf_weights.safetensors"])
def test_the_demo_and_the_dashboard_refuse_with_one_line(tmp_path: Path, name: str):
    import app
    from dashboard import detail

    path = written(CORPUS[name], tmp_path)
    with pytest.raises(SystemExit) as exited:
        app.main(["--checkpoint", str(path)])
    assert "\n" not in str(exited.value.code) and CORPUS[name].names in str(exited.value.code)
    with pytest.raises(CheckpointError, match=CORPUS[name].names):  # detail.show prints TSCAMErrors as one warning
        detail._explorer(str(path), path.stat().st_mtime)
