"""scripts/make_results_doc.py end to end on a tiny trained checkpoint: every row's CAM threshold chosen on
the val split by a run of its own, each row from its own run, the second draw and the previous conventions."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util

import pytest

from tscam_core.datasets import open_dataset
from tscam_core.datasets.fashion import generate
from tscam_core.evaluate import EvalSettings, evaluate
from tscam_core.explanation import MapSpec
from tscam_core.loading import load_model
from tscam_core.report import runs as report_runs
from tscam_core.report.columns import column_hits, interval, paired
from tscam_core.report.markdown import cell
from tscam_core.report.runs import EvalRun
from tscam_core.report.thresholds import validation_threshold
from tscam_core.results import load_results
from tscam_core.testing.tiny_training import FIXTURE, ROOT, TINY_BENCHMARK, make_dataset, tiny_config
from tscam_core.training import train


def load_script():
    spec = importlib.util.spec_from_file_location("make_results_doc", ROOT / "scripts" / "make_results_doc.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("doc")
    config = tiny_config(make_dataset(root / "data"), root / "runs", "doc", epochs=2, test_split="test")
    draw = dataclasses.replace(TINY_BENCHMARK, train=0, val=12)
    generate(root / "draw", draw, FIXTURE, progress=False)
    generate(root / "second", dataclasses.replace(draw, seed=1, val=0), FIXTURE, progress=False)
    return root, train(config) / "best.safetensors"


def test_document_shows_each_row_from_its_own_run_at_its_val_threshold(trained, tmp_path):
    script = load_script()
    root, checkpoint = trained
    doc, results = tmp_path / "results.md", tmp_path / "results" / "tiny"
    code = script.main(["--checkpoint", str(checkpoint), "--dataset", str(root / "draw"), "--results", str(results),
                        "--doc", str(doc), "--figure", str(tmp_path / "fig7.png"), "--batch-size", "6",
                        "--threads", "1", "--cam-curve-interval", "0.05", "--second-seed-dataset", str(root / "second")])
    assert code == 0
    text = doc.read_text()
    main = load_results(results)
    assert main.summary["settings"]["cam_threshold"] == validation_threshold(load_results(f"{results}-val"))
    for variant, label, folder in ((MapSpec("trans_attention"), "TransAttention", "tiny-trans_attention"),
                                   (MapSpec("trans_cam"), "TransCAM", "tiny-trans_cam"),
                                   (MapSpec("tscam", signed=True), "TS-CAM, S_c signed (Eq. 7 as published)",
                                    "tiny-tscam_signed")):
        run = load_results(tmp_path / "results" / folder)
        val = load_results(tmp_path / "results" / f"{folder}-val")
        assert (val.summary["dataset"]["split"], MapSpec.from_record(val.summary["settings"])) == ("val", variant)
        assert MapSpec.from_record(run.summary["settings"]) == variant
        threshold = validation_threshold(val)
        assert run.summary["settings"]["cam_threshold"] == threshold
        cells = " | ".join(cell(interval(column_hits(run, c))) for c in ("top1_loc", "top5_loc", "gt_known"))
        assert f"| {label} | {cells} |" in text
        assert [line for line in text.splitlines() if line.startswith(f"| {label} | {cells}")][0].endswith(
            f"| {threshold} |")
        flags = f"--variant {variant.variant}" + (" --signed-class-maps" if variant.signed else "")
        assert f"--threshold {threshold} --batch-size 6 --threads 1 --device cpu {flags}" in text
        second = load_results(tmp_path / "results" / f"{folder}-second-seed")
        assert second.summary["settings"]["cam_threshold"] == threshold  # the same threshold on the second draw
        assert f"| {label} | {threshold} | {cell(interval(column_hits(run, 'top1_loc')))} | " \
               f"{cell(interval(column_hits(second, 'top1_loc')))} |" in text
    assert f"| TS-CAM | {cell(interval(column_hits(main, 'top1_loc')))} |" in text
    previous = load_results(f"{results}-previous-conventions")
    assert (previous.summary["settings"]["box_convention"], previous.summary["settings"]["cam_curve_interval"]) == \
        ("half_open", 0.01)
    assert "--box-convention half_open" in text and "never on the test split" in text
    assert "## Table 5 on a second draw of the benchmark" in text and "GT-known Loc seed 0" in text
    attention = load_results(tmp_path / "results" / "tiny-trans_attention")
    to_attention = cell(paired(column_hits(main, "gt_known"), column_hits(attention, "gt_known")))
    assert f"GT-known Loc difference {to_attention} points" in text and "### What it shows" in text
    # The methods table holds TS-CAM's maps from the same runs, each paired with TS-CAM on the same images.
    table = text[text.index("## Localization methods"):].split("\n\n")[1].splitlines()
    difference = cell(paired(column_hits(attention, "gt_known"), column_hits(main, "gt_known")))
    assert [line.split(" | ")[0] for line in table[2:]] == ["| TS-CAM (A* x S_c)", "| TransAttention (A*)",
                                                           "| TransCAM (S_c)"]
    assert table[3].split(" | ")[2:4] == [cell(interval(column_hits(attention, "gt_known"))), difference]


def test_methods_need_a_val_split_and_a_method_that_fits(trained, tmp_path):
    script = load_script()
    root, checkpoint = trained
    model = load_model(checkpoint)
    args = argparse.Namespace(threshold=None, dataset=str(root / "second"), split="test", checkpoint=str(checkpoint),
                              results=str(tmp_path / "r"))
    with_val = script.Runs(argparse.Namespace(**{**vars(args), "dataset": str(root / "draw")}))
    with pytest.raises(ValueError, match="chooses each method's CAM threshold on the dataset's val split"):
        script.method_run(script.Runs(args), "rollout", str(checkpoint), model, tmp_path / "rollout")
    with pytest.raises(ValueError, match="method 'cam': map variant 'cam' does not exist for a TS-CAM model"):
        script.method_run(with_val, "cam", str(checkpoint), model, tmp_path / "cam")
    with pytest.raises(ValueError, match="method 'scm' needs .*; the methods it can give: "):
        script.method_run(with_val, "scm", str(checkpoint), model, tmp_path / "scm")
    with pytest.raises(ValueError, match="unknown method 'nothing'"):
        script.method_run(with_val, "nothing", str(checkpoint), model, tmp_path / "nothing")


def test_reuse_keeps_only_a_run_of_the_same_images(trained, tmp_path, monkeypatch):
    """--reuse must not pass off a run of other images (a --limit, another split or dataset), of another
    protocol (threshold step, box convention) or of another map or method as the command's."""
    root, checkpoint = trained
    out = tmp_path / "run"
    evaluate(load_model(checkpoint), open_dataset(root / "draw", "test"), out,
             EvalSettings(threads=1, loader_workers=0, thumbnails=0, cam_curve_interval=0.1, cam_threshold=0.3,
                          limit=2), progress=False)
    ran = []
    monkeypatch.setattr(report_runs.subprocess, "run",
                        lambda command, cwd: ran.append(command) or argparse.Namespace(returncode=0))
    plan = EvalRun(str(checkpoint), str(root / "draw"), "test", out, 0.3, limit=2, batch_size=6, threads=1,
                   cam_curve_interval=0.1, box_convention="inclusive")
    report_runs.run(plan, reuse=True)
    assert ran == []  # the same images, scored the same way: reused
    for changed in ({"limit": None}, {"split": "val"}, {"dataset": str(root / "second")}, {"cam_curve_interval": 0.01},
                    {"box_convention": "half_open"}, {"spec": MapSpec("trans_cam")}, {"method": "rollout"},
                    {"threshold": 0.35}):
        report_runs.run(dataclasses.replace(plan, **changed), reuse=True)
        assert len(ran) == 1, changed  # other images, protocol or map: evaluated again
        ran.clear()
    assert "--method" not in plan.command() and plan.command()[-2:] == ["--limit", "2"]
    assert dataclasses.replace(plan, method="rollout").command()[-4:] == ["--method", "rollout", "--limit", "2"]


def test_the_document_names_data_inside_the_repository_by_relative_path(tmp_path):
    script = load_script()
    assert script.in_repo(str(script.REPO / "data" / "fashion-cluttered")) == "data/fashion-cluttered"
    assert script.in_repo(str(tmp_path)) == str(tmp_path)  # elsewhere: as recorded
