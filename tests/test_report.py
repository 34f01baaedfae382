"""tscam_core.report on real evaluation runs of a tiny trained checkpoint: every interval is of the column
the summary averages, thresholds come from the val split, and each table shows what its runs hold."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from tscam_core import methods
from tscam_core.datasets import TorchWSOL, collate, open_dataset
from tscam_core.datasets.fashion import generate
from tscam_core.evaluate import EvalSettings, evaluate
from tscam_core.explanation import MapSpec
from tscam_core.intervals import Interval, bootstrap_interval, difference_interval
from tscam_core.loading import load_model
from tscam_core.metrics import best_threshold
from tscam_core.recipes import TrainConfig
from tscam_core.report.columns import (
    column_hits,
    error_hits,
    interval,
    iou_hits,
    metric_hits,
    paired,
    unpaired,
)
from tscam_core.report.conventions import PREVIOUS_CONVENTIONS, conventions_table
from tscam_core.report.markdown import cell
from tscam_core.report.methods_table import MethodCost, MethodRun, matching_costs, methods_table
from tscam_core.report.ordering import study_sections, verdict
from tscam_core.report.seeds import SeedPair, seed_table
from tscam_core.report.table5 import Evaluation, table5, threshold_note
from tscam_core.report.thresholds import has_validation, validation_threshold
from tscam_core.summary import FAILURE_TYPES
from tscam_core.testing.tiny_training import FIXTURE, TINY_BENCHMARK, make_dataset, tiny_config
from tscam_core.training import train, validate

#: 16 test and 16 validation images (seed 0) and a second draw of 16 test images (seed 1).
DRAW = dataclasses.replace(TINY_BENCHMARK, train=0, test=16, val=16)
SECOND = dataclasses.replace(DRAW, seed=1, val=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    config = tiny_config(make_dataset(root / "train-data"), root / "runs", "report", epochs=2)
    model = load_model(train(config) / "best.safetensors")
    generate(root / "draw", DRAW, FIXTURE, progress=False)
    generate(root / "second", SECOND, FIXTURE, progress=False)
    return model, root


def run(setup, name: str, split: str = "test", dataset: str = "draw", **settings):
    model, root = setup
    fields = {"threads": 1, "loader_workers": 0, "thumbnails": 0, "cam_curve_interval": 0.05, "cam_threshold": 0.2,
              **settings}
    return evaluate(model, open_dataset(root / dataset, split), root / "runs-out" / name, EvalSettings(**fields),
                    progress=False, overwrite=True)


@pytest.fixture(scope="module")
def main_run(setup):
    return run(setup, "main")


def test_every_interval_is_of_the_column_the_summary_averages(main_run):
    m = main_run.metrics
    for path in ("top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known_loc"):
        assert interval(metric_hits(main_run, path)).estimate == pytest.approx(m[path]), path
    assert metric_hits(main_run, "pxap") is None and metric_hits(main_run, "maxboxacc_v2.mean") is None
    for kind in FAILURE_TYPES:
        assert error_hits(main_run, kind).mean() == pytest.approx(m["error_analysis"][kind]), kind
    curve = m["loc_vs_iou"]
    for i, iou in enumerate(curve["iou_thresholds"]):
        gt_known, top1 = iou_hits(main_run, iou)
        assert (gt_known.mean(), top1.mean()) == pytest.approx((curve["gt_known"][i], curve["top1"][i])), iou
    for i, k in enumerate(m["layer_count"]["counts"]):
        assert column_hits(main_run, f"gt_known_layers_{k}").mean() == pytest.approx(m["layer_count"]["gt_known"][i])
    for variant, figures in m["variants"].items():
        assert column_hits(main_run, f"gt_known_{variant}").mean() == pytest.approx(figures["gt_known_loc"])
    hits = metric_hits(main_run, "gt_known_loc")
    assert interval(hits) == bootstrap_interval(hits.to_numpy())  # 2,000 resamples, seed 0
    assert cell(interval(hits)) == interval(hits).percent()
    with pytest.raises(ValueError, match="no column 'gt_known_nothing'"):
        column_hits(main_run, "gt_known_nothing")


def test_the_threshold_is_the_best_of_the_val_curve_and_scores_that_there(setup):
    val = run(setup, "val", split="val", map=MapSpec("trans_attention"))
    curve = val.metrics["loc_vs_cam_threshold"]
    chosen = validation_threshold(val)
    best = max(curve["gt_known"])
    assert curve["gt_known"][[round(t, 6) for t in curve["cam_thresholds"]].index(chosen)] == best
    # An evaluation of the val split at the chosen threshold localizes exactly as the curve said.
    again = run(setup, "val-again", split="val", map=MapSpec("trans_attention"), cam_threshold=chosen)
    assert again.metrics["gt_known_loc"] == pytest.approx(best)
    with pytest.raises(ValueError, match="chosen on the 'val' split only, this run is of split 'test'"):
        validation_threshold(run(setup, "not-val"))


def test_a_val_run_chooses_the_threshold_training_chooses_on_the_same_images(setup):
    """The page's thresholds (a val-split evaluation's curve) are those training's validation picks."""
    model, root = setup
    loader = DataLoader(TorchWSOL(open_dataset(root / "draw", "val"), model.info.transform), batch_size=8,
                        collate_fn=collate)
    config = TrainConfig()
    for spec in (MapSpec("tscam"), MapSpec("trans_attention"), MapSpec("trans_cam")):
        chosen = validate(model, loader, config.thresholds(), config.threshold, method=methods.get(spec.key))["best_threshold"]
        assert validation_threshold(run(setup, f"agree-{spec.key}", split="val", map=spec)) == pytest.approx(chosen)


def test_among_equal_thresholds_the_one_nearest_the_preferred_wins():
    thresholds = [0.0, 0.05, 0.1, 0.15, 0.2]
    assert best_threshold(thresholds, [0.1, 0.5, 0.5, 0.5, 0.2], 0.1) == 0.1
    assert best_threshold(thresholds, [0.1, 0.5, 0.2, 0.2, 0.5], 0.1) == 0.05  # nearer 0.1 than 0.2
    assert best_threshold(thresholds, [None, 0.1, 0.2, None, 0.3], 0.1) == 0.2
    with pytest.raises(ValueError, match="no GT-known Loc at any CAM threshold"):
        best_threshold([0.1], [None], 0.1)


def test_a_val_split_apart_from_the_evaluated_one_is_needed(setup):
    _, root = setup
    assert has_validation(root / "draw", "test")
    assert not has_validation(root / "second", "test")  # generated without --val
    assert not has_validation(root / "draw", "val")


def test_paired_differences_need_the_same_images_in_any_order(setup, main_run):
    other = run(setup, "trans_attention", map=MapSpec("trans_attention"))
    a, b = column_hits(other, "gt_known"), column_hits(main_run, "gt_known")
    difference = paired(a, b)
    assert difference.estimate == pytest.approx(other.metrics["gt_known_loc"] - main_run.metrics["gt_known_loc"])
    assert paired(a, b.sample(frac=1, random_state=1)) == difference  # pairs by image id, not by row
    assert paired(a, a) == Interval(0.0, 0.0, 0.0, 0.95)
    with pytest.raises(ValueError, match="scored different images"):
        paired(a, column_hits(run(setup, "fewer", limit=5), "gt_known"))


def test_table5_shows_each_row_with_intervals_and_its_paired_difference(setup, main_run):
    other = run(setup, "trans_cam", map=MapSpec("trans_cam"), cam_threshold=0.35)
    tscam = Evaluation(main_run, ["python", "-m", "tscam_core.evaluate"], 1, setup[0].info)
    text = "\n".join(table5(tscam, {MapSpec("trans_cam"): other}, None, ["NOTE"], "python scripts/x.py"))
    cells = [cell(interval(column_hits(other, c))) for c in ("top1_loc", "top5_loc", "gt_known")]
    assert f"| TransCAM | {' | '.join(cells)} | 17.7 | 18.3 | 18.3 | 0.35 |" in text
    difference = paired(column_hits(other, "gt_known"), column_hits(main_run, "gt_known"))
    assert f"| TransCAM | {cell(paired(column_hits(other, 'top1_loc'), column_hits(main_run, 'top1_loc')))}" in text
    assert text.count(cell(difference)) >= 1 and "NOTE" in text
    # Without a run of its own, TransAttention comes from the main run's counts: GT-known alone has an interval.
    v = main_run.metrics["variants"]["trans_attention"]
    shared = cell(interval(column_hits(main_run, "gt_known_trans_attention")))
    assert f"| TransAttention | {100 * v['top1_loc']:.1f} | {100 * v['top5_loc']:.1f} | {shared} |" in text
    assert "share the main run's CAM threshold (0.2)" in "\n".join(threshold_note([], [], 0.2))


def test_the_second_draw_table_compares_both_draws(setup, main_run):
    _, root = setup
    second = run(setup, "second", dataset="second")
    lines = seed_table([SeedPair("TS-CAM", main_run, second)], str(root / "draw"), str(root / "second"), [["cmd"]])
    text = "\n".join(lines)
    x, y = column_hits(main_run, "gt_known"), column_hits(second, "gt_known")
    assert "GT-known Loc seed 0 | GT-known Loc seed 1 | change (seed 1 - seed 0)" in text
    assert f"| {cell(interval(x))} | {cell(interval(y))} | {cell(unpaired(y, x))} |" in text
    assert unpaired(y, x) == difference_interval(y.to_numpy(), x.to_numpy())
    changes = [unpaired(column_hits(second, c), column_hits(main_run, c)) for c in ("top1_loc", "gt_known")]
    within = sum(c.low <= 0 <= c.high for c in changes)
    assert f"{within} of 2 changes have a 95% interval that contains 0" in text
    largest = max(changes, key=lambda c: abs(c.estimate))
    assert f"the largest change is {100 * largest.estimate:+.1f} points (TS-CAM" in text


def test_the_conventions_table_is_the_difference_of_two_real_runs(setup, main_run):
    previous = run(setup, "previous", **PREVIOUS_CONVENTIONS)
    assert previous.summary["settings"]["box_convention"] == "half_open"
    text = "\n".join(conventions_table(main_run, previous, [["a"], ["b"]]))
    now, before = column_hits(main_run, "gt_known"), column_hits(previous, "gt_known")
    assert f"| GT-known Loc | {cell(interval(now))} | {cell(interval(before))} | {cell(paired(now, before))} |" in text
    assert f"{int((now != before).sum())} of 16 images change their GT-known verdict" in text
    mean = main_run.metrics["maxboxacc_v2"]["mean"], previous.metrics["maxboxacc_v2"]["mean"]
    assert f"| MaxBoxAccV2 mean | {100 * mean[0]:.1f} | {100 * mean[1]:.1f} | {100 * (mean[0] - mean[1]):.1f} |" in text


def test_the_methods_table_shows_each_method_at_its_val_threshold_with_its_cost(setup, tmp_path):
    """Each method's threshold from its val run, its test run at it, its cost from benchmarks/methods.py."""
    from benchmarks.measure import Budget
    from benchmarks.methods import method_costs, write_json

    model, _ = setup
    runs = []
    for name in ("tscam", "trans_attention"):
        threshold = validation_threshold(run(setup, f"{name}-val", split="val", map=MapSpec(name)))
        test = run(setup, f"{name}-test", map=MapSpec(name), cam_threshold=threshold)
        runs.append(MethodRun(name, MapSpec(name).label, threshold, test, [["val", name], ["test", name]]))
    size = tuple(model.info.transform.input_size)
    measured = method_costs(model, "tiny", 16, size, Budget(torch.device("cpu"), 1, 0))
    assert {cost.method for cost in measured} >= {"tscam", "trans_attention", "gradcam", "rollout", "scm"}  # scm: on its twin
    write_json(tmp_path / "methods.json", measured, "python benchmarks/methods.py --quick", torch.device("cpu"))
    costs, command = matching_costs(tmp_path / "methods.json", model.info)
    assert command == "python benchmarks/methods.py --quick" and set(costs) == {c.method for c in measured}
    text = "\n".join(methods_table(runs, costs, command))
    tscam, attention = runs[0].test, runs[1].test
    difference = paired(column_hits(attention, "gt_known"), column_hits(tscam, "gt_known"))
    cost = costs["trans_attention"]
    assert (f"| {MapSpec('trans_attention').label} | {cell(interval(column_hits(attention, 'top1_loc')))} | "
            f"{cell(interval(column_hits(attention, 'gt_known')))} | {cell(difference)} | "
            f"{100 * attention.metrics['maxboxacc_v2']['mean']:.1f} | {100 * attention.metrics['pxap']:.1f} | "
            f"{runs[1].threshold:g} | {cost.ms_per_image:.2f} ({cost.time_vs_explain:.1f}x) | ") in text
    assert "val trans_attention" in text and "python benchmarks/methods.py --quick" in text
    # Costs of another architecture are not shown as this model's.
    other = json.loads((tmp_path / "methods.json").read_text())
    other["costs"] = [{**c, "arch": "deit_small_patch16_224"} for c in other["costs"]]
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert matching_costs(tmp_path / "other.json", model.info) == ({}, command)
    assert "not measured" in "\n".join(methods_table(runs, {}, None))


def test_a_cost_survives_its_json():
    cost = MethodCost("m", "arch", (32, 32), 5, 16, "gradcam", 1.5, 2048, 2.5, 3.0)
    assert MethodCost.from_dict(json.loads(json.dumps(cost.to_dict()))) == cost


def test_columns_index_by_image_id(main_run):
    hits = column_hits(main_run, "gt_known")
    assert list(hits.index) == main_run.per_image["image_id"].astype(str).tolist()
    assert isinstance(hits, pd.Series) and set(np.unique(hits.to_numpy())) <= {0.0, 1.0}


def test_the_ordering_sentence_follows_the_paired_interval():
    assert verdict(Interval(-0.2, -0.25, -0.15, 0.95), "A*") == "localizes **worse** than A*"
    assert verdict(Interval(0.1, 0.05, 0.15, 0.95), "A*").startswith("localizes **better** than A*")
    assert verdict(Interval(0.01, -0.02, 0.04, 0.95), "A*") == "cannot be told apart from A* on these images"


def test_the_study_comes_in_with_its_sections_one_level_down(tmp_path):
    study = tmp_path / "study.md"
    study.write_text("# Title\nintro\n## Setup\n- a\n### Rows\nx\n## Notes\nleft out\n## Limits\n- l\n")
    assert study_sections(study) == ["### Setup", "- a", "#### Rows", "x", "### Limits", "- l"]
    assert study_sections(tmp_path / "absent.md") == []
