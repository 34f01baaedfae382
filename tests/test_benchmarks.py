"""The benchmark code (benchmarks/run.py --quick path) on a tiny real ViT, so that it cannot rot.

Speed goals are never asserted here (they belong to the benchmark's table); what is asserted
is that every section runs, that its figures are sane, and that the measuring tools measure.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from benchmarks.evaluation_speed import evaluation_speed, images_for
from benchmarks.explicit import explicit_explain
from benchmarks.measure import Budget, Timings, peak_memory, time_interleaved
from benchmarks.report import Goal, Report, Row, markdown_page
from benchmarks.run import Plan, Subject, benchmark, publish
from tscam_core import ModelInfo, Preprocess, build_model

CPU = torch.device("cpu")
TINY_KWARGS = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 3}


def tiny_subject(num_classes: int = 7) -> Subject:
    torch.manual_seed(0)
    info = ModelInfo("vit_tiny_patch16_224", num_classes, timm_kwargs=TINY_KWARGS,
                     preprocess=Preprocess((32, 32), (32, 32)).to_config())
    return Subject("tiny", build_model(info).eval())


@pytest.fixture(scope="module")
def quick_report():
    plan = dataclasses.replace(Plan.create(CPU, quick=True), eval_images=8)
    return benchmark([tiny_subject()], plan, "python benchmarks/run.py --quick")


def test_quick_run_covers_every_section_at_both_batch_sizes(quick_report):
    # No section may be skipped: a skip here means a tscam_core API the benchmark uses has changed.
    assert quick_report.notes == []
    assert {row.section for row in quick_report.rows} == {1, 2, 3, 4, 5, 6, 7}
    for section in (1, 2, 3, 4, 7):
        assert {row.batch for row in quick_report.rows if row.section == section} == {1, 16}
    for row in quick_report.rows:
        assert math.isfinite(row.value) and row.value > 0, row
        assert row.met is None or row.met == row.goal.met_by(row.value)
    goals = {row.metric: row.goal for row in quick_report.rows if row.section == 1}
    assert goals == {"explain / logits-only time": Goal("<=", 1.03),
                     "explain / logits-only peak memory": Goal("<=", 1.05)}


def test_explicit_approach_needs_more_memory_once_tokens_are_many(quick_report):
    """At the larger input (7 x 7 tokens) the stacked N x N matrices outweigh everything explain keeps."""
    rows = [row for row in quick_report.rows
            if row.metric == "explicit / explain peak memory" and row.setting.startswith("56x56")]
    assert {row.batch for row in rows} == {1, 16}
    for row in rows:
        assert row.value > 1.2, row
    # explain itself keeps no more than the logits-only forward plus a few per-block rows
    for row in quick_report.rows:
        if row.metric == "explain / logits-only peak memory":
            assert row.value < 1.5, row


def test_report_is_written_as_json_and_markdown(quick_report, tmp_path):
    publish(quick_report, tmp_path / "r.json", tmp_path / "performance.md")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["command"] == "python benchmarks/run.py --quick"
    assert {"cpu", "cpu_cores", "versions"} <= set(data["machine"])
    assert data["machine"]["versions"]["torch"] == torch.__version__.split("+")[0]
    assert len(data["rows"]) == len(quick_report.rows)
    assert all({"value", "goal", "met", "metric"} <= set(row) for row in data["rows"])
    page = (tmp_path / "performance.md").read_text()
    assert "python benchmarks/run.py --quick" in page
    assert page.count("\n| ") == len(quick_report.rows) + 1  # header row plus one line per figure
    assert quick_report.machine["cpu"] in page
    assert markdown_page(Report.from_dict(data)) == page  # run.py --render rebuilds the page from the JSON


def test_explicit_reference_computes_the_same_maps():
    """The comparison is fair only if the official-style path yields explain's numbers."""
    model = tiny_subject().model
    images = torch.randn(2, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    fast, explicit = model.explain(images), explicit_explain(model, images)
    for name in ("logits", "layer_attention", "semantic"):
        torch.testing.assert_close(getattr(explicit, name), getattr(fast, name), atol=1e-5, rtol=1e-5)
    assert all(block.attn.fused_attn == model.blocks[0].attn.fused_attn for block in model.blocks)
    assert not any(block.attn.attn_drop._forward_hooks for block in model.blocks)


def test_peak_memory_sees_live_tensors_not_their_sum():
    mib = 2**20

    def sequential() -> None:
        for _ in range(3):
            torch.ones(mib // 4)  # 1 MiB, freed at once

    def together() -> None:
        kept = [torch.ones(mib // 4) for _ in range(3)]
        del kept

    assert mib <= peak_memory(sequential, CPU) < 1.5 * mib
    assert 3 * mib <= peak_memory(together, CPU) < 3.5 * mib


def test_candidates_run_interleaved_after_warmup():
    calls: list[str] = []
    timings = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 1, CPU)
    assert calls == ["a", "b"] * 4
    assert all(len(times) == 3 for times in timings.seconds.values())


def test_ratio_is_the_median_of_paired_ratios():
    timings = Timings({"a": [2.0, 9.0, 3.0], "b": [1.0, 3.0, 1.0]})
    assert timings.ratio("a", "b") == 3.0
    assert timings.median("a") == 3.0


def test_goal_and_row():
    assert Goal("<=", 1.03).met_by(1.03) and not Goal("<=", 1.03).met_by(1.031)
    assert Goal(">=", 0.85).met_by(0.9) and Goal(">", 1).met_by(1.5) and not Goal(">", 1).met_by(1.0)
    with pytest.raises(ValueError):
        Goal("~", 1.0)
    assert Row(1, "m", 1, "", "x", 2.0).met is None
    assert Row(1, "m", 1, "", "x", 2.0, goal=Goal("<=", 1.03)).to_dict()["met"] is False


def test_quick_plan_trims_repetitions_not_what_is_measured():
    quick, full = Plan.create(CPU, quick=True), Plan.create(CPU, quick=False)
    # --quick must stay well under the full run: fewer rounds everywhere, no warm-up for the heavy calls ...
    assert quick.precise.repeats < full.precise.repeats and quick.heavy.repeats <= full.heavy.repeats
    assert quick.heavy.warmup == 0 < full.heavy.warmup
    # ... yet still time every candidate at least once and evaluate at least two batches of 16.
    assert quick.precise.repeats >= 2 and quick.heavy.repeats >= 1 and quick.eval_images >= 32


def test_section_five_runs_whole_batches_for_the_asked_forward_time():
    """Enough batches that the pipeline's fill and drain are a small part; none asked, none added."""
    model = tiny_subject().model
    assert images_for(model, 4, 0.0, CPU) == 0
    one_second = images_for(model, 4, 1.0, CPU)
    assert one_second % 4 == 0 and one_second >= 4
    assert images_for(model, 4, 4.0, CPU) > one_second


def test_section_five_runs_for_two_models_in_one_work_folder(tmp_path):
    """The full run measures two models in one folder: each evaluation writes a results folder of its own."""
    budget = Budget(CPU, repeats=1, warmup=1)
    for subject in (tiny_subject(), tiny_subject(5)):
        [row] = evaluation_speed(subject.model, subject.label, 4, 8, budget, tmp_path)
        assert row.section == 5 and row.value > 0 and "beyond the forward" in row.detail


def test_cnn_cams_cost_is_measured_on_the_cnn_trained_beside_the_model(tmp_path):
    """The methods table's CNN CAM row is the fashion-cnn checkpoint's: its cost comes from a CNN of that
    shape, recorded under the CNN's architecture so that the row finds it; other models have no such CNN."""
    from benchmarks.methods import cnn_twin, method_costs, write_json
    from tscam_core.recipes import preset_config
    from tscam_core.report.methods_table import matching_costs

    fashion, cnn_config = preset_config("fashion"), preset_config("fashion-cnn")
    preprocess = Preprocess((64, 64), (64, 64)).to_config()
    torch.manual_seed(0)
    model = build_model(ModelInfo(fashion.arch, 10, timm_kwargs=fashion.timm_kwargs(), preprocess=preprocess)).eval()
    cnn = cnn_twin(model)
    assert cnn is not None and (cnn.info.arch, cnn.info.family) == (cnn_config.arch, "cnn_cam")
    measured = method_costs(model, "fashion", 16, (64, 64), Budget(CPU, 1, 0))
    costs = {cost.method: cost for cost in measured}
    assert costs["cam"].arch == cnn_config.arch and costs["tscam"].arch == costs["scm"].arch == fashion.arch
    assert costs["cam"].ms_per_image > 0 and costs["cam"].peak_memory_bytes > 0
    write_json(tmp_path / "methods.json", measured, "python benchmarks/methods.py", CPU)
    cnn_info = ModelInfo(cnn_config.arch, 10, timm_kwargs=cnn_config.timm_kwargs(), family="cnn_cam",
                         preprocess=preprocess)
    found, _ = matching_costs(tmp_path / "methods.json", cnn_info)
    assert set(found) == {"cam"}  # only the CNN's cost, not the ViT's methods, is the CNN row's
    both, _ = matching_costs(tmp_path / "methods.json", model.info, cnn_info)  # the page's rows: both models
    assert set(both) == set(costs) and both["cam"] == costs["cam"] and both["tscam"] == costs["tscam"]
    assert cnn_twin(tiny_subject().model) is None
