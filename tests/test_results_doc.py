"""scripts/make_results_doc.py: Table 5's map variants, each at the CAM threshold its own map chose on the
checkpoint's validation images, end to end on a tiny trained checkpoint."""

from __future__ import annotations

import argparse
import importlib.util

import pytest

from tscam_core.boxes import predict_box
from tscam_core.datasets import TorchWSOL, collate
from tscam_core.explanation import MapSpec
from tscam_core.loading import load_model
from tscam_core.overlaps import box_iou
from tscam_core.testing.tiny_training import ROOT, make_dataset, tiny_config
from tscam_core.training import holdout_split, open_dataset, train


def load_script():
    spec = importlib.util.spec_from_file_location("make_results_doc", ROOT / "scripts" / "make_results_doc.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("doc")
    data = make_dataset(root / "data")
    config = tiny_config(data, root / "runs", "doc", epochs=2, test_split="test")
    return config, train(config) / "best.safetensors"


def best_threshold_by_hand(checkpoint, config, spec: MapSpec) -> float:
    """The threshold with the most GT-known hits on the held-out images, box by box (first of equals)."""
    model = load_model(checkpoint)
    _, held = holdout_split(open_dataset(config.data, "train"), config.holdout, config.seed)
    batch = collate([TorchWSOL(held, model.info.transform)[i] for i in range(len(held))])
    explanation = model.explain(batch["image"])
    maps = explanation.maps(spec, batch["label"][:, None])[:, 0]
    size = tuple(batch["image"].shape[-2:])
    hits = {t: sum(float(box_iou(predict_box(maps[k], size, t), batch["boxes"][k].numpy()).max()) >= 0.5
                   for k in range(len(held)))
            for t in config.thresholds()}
    best = max(hits.values())
    return min((t for t, h in hits.items() if h == best), key=lambda t: abs(t - config.threshold))


def test_each_variant_gets_the_threshold_its_map_scores_best_with_on_validation(trained):
    script = load_script()
    config, checkpoint = trained
    args = argparse.Namespace(threshold=None, split="test", batch_size=5)
    model = load_model(checkpoint)
    specs = [MapSpec("trans_attention"), MapSpec("trans_cam"), script.SIGNED]
    chosen = script.variant_thresholds(args, model, specs)
    assert list(chosen) == specs
    for spec, threshold in chosen.items():
        assert threshold == best_threshold_by_hand(checkpoint, config, spec), spec
    # A threshold given for all, or validation images that are the evaluated split: nothing is chosen.
    assert script.variant_thresholds(argparse.Namespace(threshold=0.3, split="test", batch_size=5), model,
                                     [MapSpec("trans_cam")]) == {}
    assert script.variant_thresholds(argparse.Namespace(threshold=None, split="train", batch_size=5),
                                     model, [MapSpec("trans_cam")]) == {}


def test_document_shows_each_variant_from_its_own_run(trained, tmp_path):
    script = load_script()
    config, checkpoint = trained
    doc, results = tmp_path / "results.md", tmp_path / "results" / "tiny"
    code = script.main(["--checkpoint", str(checkpoint), "--dataset", config.data, "--results", str(results),
                        "--doc", str(doc), "--figure", str(tmp_path / "fig7.png"), "--batch-size", "6",
                        "--threads", "1"])
    assert code == 0
    text = doc.read_text()
    chosen = script.variant_thresholds(argparse.Namespace(threshold=None, split="test", batch_size=5),
                                       load_model(checkpoint), [MapSpec("trans_attention"), MapSpec("trans_cam")])
    chosen.update(script.variant_thresholds(argparse.Namespace(threshold=None, split="test", batch_size=5),
                                            load_model(checkpoint), [script.SIGNED]))
    for variant, label, folder in ((MapSpec("trans_attention"), "TransAttention", "tiny-trans_attention"),
                                   (MapSpec("trans_cam"), "TransCAM", "tiny-trans_cam"),
                                   (script.SIGNED, "TS-CAM, S_c signed (Eq. 7 as published)", "tiny-tscam_signed")):
        run = script.load_results(tmp_path / "results" / folder)
        assert MapSpec.from_record(run.summary["settings"]) == variant
        assert run.summary["settings"]["cam_threshold"] == chosen[variant]
        m = run.metrics
        assert (f"| {label} | {100 * m['top1_loc']:.1f} | {100 * m['top5_loc']:.1f} | {100 * m['gt_known_loc']:.1f} |"
                in text)
        assert text.splitlines()[[i for i, line in enumerate(text.splitlines())
                                  if line.startswith(f"| {label} |")][0]].endswith(f"| {chosen[variant]} |")
        flags = f"--variant {variant.variant}" + (" --signed-class-maps" if variant.signed else "")
        assert f"--threshold {chosen[variant]} --batch-size 6 --threads 1 --device cpu {flags}" in text
    main = script.load_results(results)
    assert f"| TS-CAM | {100 * main.metrics['top1_loc']:.1f} |" in text
    assert "never on the test split" in text


def test_without_validation_images_the_rows_share_the_main_threshold(trained, tmp_path):
    script = load_script()
    _, checkpoint = trained
    model = load_model(checkpoint)
    from tscam_core.datasets import open_dataset as open_split
    from tscam_core.evaluate import EvalSettings, evaluate

    split = open_split(model.info.recipe["data"], "test")
    results = evaluate(model, split, tmp_path / "run", EvalSettings(threads=1, loader_workers=0, thumbnails=0,
                                                                    cam_curve_interval=0.1, cam_threshold=0.3),
                       progress=False)
    text = script.render(results, ["python", "-m", "tscam_core.evaluate"], "python scripts/make_results_doc.py",
                         tmp_path / "fig7.png", tmp_path / "results.md")
    v = results.metrics["variants"]["trans_cam"]
    assert f"| TransCAM | {100 * v['top1_loc']:.1f} | {100 * v['top5_loc']:.1f} | {100 * v['gt_known_loc']:.1f} |" in text
    assert "share the main run's CAM threshold (0.3)" in text


def test_reuse_keeps_only_a_run_of_the_same_images(trained, tmp_path, monkeypatch):
    """--reuse must not pass off a run of other images (a --limit, another split or dataset) or of another
    protocol (threshold step, box convention) as the command's."""
    script = load_script()
    config, checkpoint = trained
    from tscam_core.datasets import open_dataset as open_split
    from tscam_core.evaluate import EvalSettings, evaluate

    out = tmp_path / "run"
    evaluate(load_model(checkpoint), open_split(config.data, "test"), out,
             EvalSettings(threads=1, loader_workers=0, thumbnails=0, cam_curve_interval=0.1, cam_threshold=0.3,
                          limit=2), progress=False)
    ran = []
    monkeypatch.setattr(script.subprocess, "run",
                        lambda command, cwd: ran.append(command) or argparse.Namespace(returncode=0))
    args = argparse.Namespace(reuse=True, dataset=str(config.data), split="test", limit=2, batch_size=6, threads=1,
                              device="cpu", cam_curve_interval=0.1, box_convention="inclusive")
    script.run_evaluation(args, str(checkpoint), out, 0.3)
    assert ran == []  # the same images, scored the same way: reused
    for changed in ({"limit": None}, {"split": "all"}, {"dataset": str(tmp_path)}, {"cam_curve_interval": 0.01},
                    {"box_convention": "half_open"}):
        script.run_evaluation(argparse.Namespace(**{**vars(args), **changed}), str(checkpoint), out, 0.3)
        assert len(ran) == 1, changed  # other images or another protocol: evaluated again
        ran.clear()


def test_the_document_names_data_inside_the_repository_by_relative_path(tmp_path):
    script = load_script()
    assert script.in_repo(str(script.REPO / "data" / "fashion-cluttered")) == "data/fashion-cluttered"
    assert script.in_repo(str(tmp_path)) == str(tmp_path)  # elsewhere: as recorded
