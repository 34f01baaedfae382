"""Write docs/results.md: the paper's CUB tables, reproduced on the embedded benchmark from one evaluation run.

    python scripts/make_results_doc.py --checkpoint checkpoints/tscam_fashion.safetensors \\
        --dataset data/fashion-cluttered [--cnn-checkpoint runs/fashion-cnn/best.safetensors]

One ``python -m tscam_core.evaluate`` run (run here as a subprocess, so the command shown in the
document is the command that ran, less the ``--overwrite`` that lets it replace an older folder)
holds Table 12's layer counts, Fig. 7's curve, Table 7's error analysis and MaxBoxAccV2 / PxAP.
Table 5's other map variants (A* alone, S_c alone, and TS-CAM with S_c coupled signed, as
published) get a run each, at the CAM threshold their own map scores best with on the checkpoint's
validation images, as the TS-CAM map's threshold was chosen in training: one shared threshold would
favour one map. With ``--cnn-checkpoint`` (a CNN CAM trained by ``train/run.py --preset fashion-cnn
--name fashion-cnn``) a second run gives Table 5's CAM row and a CAM row of Table 7; without it the
CAM row says "not run" and gives the commands that would fill it.
``--reuse`` keeps an existing results folder made from the same checkpoint file (same SHA-256) on the
same images (dataset, split and limit) at the same CAM threshold and map variant.
Every number written comes from those folders; the paper's CUB-200-2011 figures are copied beside
them for reference only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import torch

from tscam_core.checkpoint import ModelInfo
from tscam_core.cnn_cam import CNNCAM
from tscam_core.datasets import TorchWSOL, collate
from tscam_core.errors import TSCAMError
from tscam_core.explanation import MapSpec
from tscam_core.files import file_sha256
from tscam_core.loading import load_model
from tscam_core.metrics import CAM_CURVE_INTERVAL
from tscam_core.model import TSCAM
from tscam_core.overlaps import BOX_CONVENTIONS, DEFAULT_BOX_CONVENTION
from tscam_core.recipes import TrainConfig
from tscam_core.results import Results, load_results
from tscam_core.summary import FAILURE_TYPES, METRICS, Metric
from tscam_core.training import training_splits, validate

REPO = Path(__file__).resolve().parents[1]

#: The paper's CUB-200-2011 figures (Tables 5, 7, 8, 12), in percent; None where the paper has none.
PAPER_TABLE5 = {  # Top-1, Top-5, GT-known Loc
    "CAM (VGG16)": (44.2, 52.2, 58.0),
    "CAM (GoogLeNet)": (41.2, 51.7, 55.1),
    "TransAttention (Deit-S)": (58.9, 69.7, 73.0),
    "TransCAM (Deit-S)": (17.7, 18.3, 18.3),
    "TS-CAM (Deit-S)": (71.3, 83.8, 87.8),
}
PAPER_MAIN = {"top1_cls": 80.3, "top5_cls": 94.8, "top1_loc": 71.3, "top5_loc": 83.8, "gt_known_loc": 87.7}
PAPER_TABLE12 = {8: (65.2, 75.8, 79.0), 9: (68.5, 80.0, 83.6), 10: (70.2, 81.2, 85.5), 11: (71.2, 83.7, 87.7),
                 12: (71.3, 83.8, 87.7)}
PAPER_TABLE7 = {  # Cls, M-Ins, Part, More, OT
    "VGG16 (CAM)": (23.28, None, 21.91, 10.53, 1.76),
    "InceptionV3 (CAM)": (26.39, None, 23.09, 5.52, 0.64),
    "TS-CAM (Deit-S)": (19.66, None, 6.30, 2.85, 0.01),
}
#: TS-CAM with S_c coupled signed, as the paper's Eq. 7 and the official code do.
SIGNED = MapSpec("tscam", signed=True)
#: Table 5's transformer rows: (map, label, the paper's row it sits beside).
VARIANT_ROWS = ((MapSpec("trans_attention"), "TransAttention", "TransAttention"),
                (MapSpec("trans_cam"), "TransCAM", "TransCAM"), (MapSpec("tscam"), "TS-CAM", "TS-CAM"),
                (SIGNED, "TS-CAM, S_c signed (Eq. 7 as published)", "TS-CAM"))
#: How the CAM row is produced when it was not: the training recipe, then this script with the checkpoint.
CNN_TRAIN_COMMAND = "python train/run.py --preset fashion-cnn --name fashion-cnn"
CNN_CHECKPOINT = "runs/fashion-cnn/best.safetensors"


#: Recipe fields that name the model or only where and how fast a run went: not part of "trained the same way".
NOT_RECIPE = {"model_family", "arch", "timm_extra", "img_size", "patch_size", "depth", "embed_dim", "num_heads",
              "preset", "name", "output", "export", "device", "workers", "threads", "save_every", "progress",
              "max_steps", "epochs_done", "steps_done", "amp", "channels_last", "on_error"}


class Evaluation(NamedTuple):
    """One evaluated checkpoint: its results folder, the command that wrote it, its size and metadata.

    A NamedTuple, not a dataclass: the tests load this script by path, outside sys.modules.
    """

    results: Results
    command: list[str]
    parameters: int
    info: ModelInfo


def recipe_differences(cnn: ModelInfo, tscam: ModelInfo) -> list[str]:
    """Training settings in which the two checkpoints' recipes differ (the model itself aside)."""
    keys = sorted((set(cnn.recipe) | set(tscam.recipe)) - NOT_RECIPE)
    return [f"{key} {cnn.recipe.get(key)!r} (TS-CAM: {tscam.recipe.get(key)!r})" for key in keys
            if cnn.recipe.get(key) != tscam.recipe.get(key)]


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def choe_row(metric: Metric, value: float | None, thresholds: dict[str, float]) -> str:
    """A row of the stricter metrics' table: the value, and the best CAM threshold where the metric has one."""
    best = thresholds.get(metric.path.rpartition(".")[2])
    shown = pct(value) if value is not None or metric.path != "pxap" else "no masks"
    return row(metric.label, shown, "" if best is None else f"{best:g}")


def paper(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def cam_threshold(args: argparse.Namespace, info: ModelInfo) -> float:
    """--threshold, else the one the checkpoint's training chose on its validation split (never on test), else 0.1."""
    if args.threshold is not None:
        return args.threshold
    return info.default_threshold()[0]


def in_repo(path: str) -> str:
    """``path`` relative to the repository where it lies inside it: the document names no machine's folders."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else path


def map_flags(spec: MapSpec) -> list[str]:
    """The evaluation command's options that select ``spec``."""
    layers = spec.blocks if isinstance(spec.blocks, str) else ",".join(map(str, spec.blocks)) + ","
    return (["--variant", spec.variant] + ([] if spec.blocks == "all" else ["--layers", layers])
            + (["--signed-class-maps"] if spec.signed else []))


def results_folder(results: str, spec: MapSpec) -> Path:
    """Where a row's own run goes: ``results/benchmark-trans_cam``, ``results/benchmark-tscam_signed``."""
    return Path(f"{results}-{spec.key.replace('+', '_')}")


def evaluation_command(args: argparse.Namespace, checkpoint: str, out: Path, threshold: float,
                       spec: MapSpec | None = None) -> list[str]:
    """The evaluation of ``checkpoint``'s own map, or of ``spec``, at CAM threshold ``threshold``."""
    command = ["python", "-m", "tscam_core.evaluate", "--checkpoint", str(checkpoint), "--dataset",
               str(args.dataset), "--split", args.split, "--out", str(out),
               # the protocol's options spelled out, so that the document does not hang on defaults
               "--cam-curve-interval", str(args.cam_curve_interval), "--box-convention", args.box_convention,
               "--threshold", str(threshold),
               "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--device", args.device]
    if spec is not None:
        command += map_flags(spec)
    if args.limit:
        command += ["--limit", str(args.limit)]
    return command


def variant_thresholds(args: argparse.Namespace, model: TSCAM, specs: list[MapSpec]) -> dict[MapSpec, float]:
    """Each of ``variants``' CAM threshold, chosen as training chose the model's own map's: best GT-known Loc
    on the checkpoint's validation images, rebuilt from its recipe. Empty when --threshold fixes one for
    all, or when the recipe names no validation images apart from the evaluated split (choosing there
    would tune on it)."""
    if args.threshold is not None or not model.info.recipe:
        return {}
    config = TrainConfig.from_recipe(model.info.recipe)
    if (config.train_split if config.val_split == "holdout" else config.val_split) == args.split:
        return {}
    _, validation = training_splits(config)
    loader = torch.utils.data.DataLoader(TorchWSOL(validation, model.info.transform), batch_size=args.batch_size,
                                         collate_fn=collate)
    chosen = {}
    for spec in specs:
        chosen[spec] = float(validate(model, loader, config.thresholds(), config.threshold, spec=spec)["best_threshold"])
    return chosen


def run_evaluation(args: argparse.Namespace, checkpoint: str, out: Path, threshold: float,
                   spec: MapSpec | None = None) -> tuple[Results, list[str]]:
    command = evaluation_command(args, checkpoint, out, threshold, spec)
    if args.reuse and (out / "summary.json").is_file():
        try:
            existing = load_results(out)
            settings, dataset = existing.summary["settings"], existing.summary["dataset"]
            if (existing.summary["checkpoint"].get("sha256") == file_sha256(Path(checkpoint))
                    and settings["cam_threshold"] == threshold
                    and settings.get("cam_curve_interval") == args.cam_curve_interval
                    and settings.get("box_convention") == args.box_convention
                    and (spec is None or MapSpec.from_record(settings) == spec)
                    and Path(dataset["path"]) == Path(args.dataset).resolve() and dataset["split"] == args.split
                    and settings.get("limit") == (args.limit or None)):  # the images the command evaluates
                return existing, command
        except TSCAMError:
            pass
    # A folder not reused is evaluated again, over what it holds (the flag is left out of the document).
    completed = subprocess.run([sys.executable, *command[1:], "--overwrite"], cwd=REPO)
    if completed.returncode != 0:
        raise SystemExit(f"the evaluation failed (exit {completed.returncode}): {shlex.join(command)}")
    return load_results(out), command


def evaluate_checkpoint(args: argparse.Namespace, checkpoint: str, model: TSCAM | CNNCAM, out: Path) -> Evaluation:
    """Evaluate ``model``, loaded from ``checkpoint``, on its own map at its validated threshold."""
    results, command = run_evaluation(args, checkpoint, out, cam_threshold(args, model.info))
    return Evaluation(results, command, sum(p.numel() for p in model.parameters()), model.info)


def cam_rows(cnn: Evaluation | None, results: Results, tscam: Evaluation | None,
             script_command: str) -> tuple[list[str], list[str]]:
    """Table 5's CAM row and the paragraph under the table: what was measured, or how to measure it."""
    reference = map(paper, PAPER_TABLE5["CAM (VGG16)"])
    vgg = ("The paper's CAM figures beside it are VGG16's on CUB (GoogLeNet's: "
           + " / ".join(map(paper, PAPER_TABLE5["CAM (GoogLeNet)"])) + ").")
    if cnn is None:
        return [row("CAM (CNN of comparable size)", "not run", "", "", *reference, "")], [
            "The CAM row was not run. It needs the CNN CAM baseline (CAM of Zhou et al. 2016 on a timm CNN "
            "of TS-CAM's size: the `fashion-cnn` preset of `tscam_core/recipes.py`) trained by the same "
            "recipe on the same data, then this script with its checkpoint:",
            "",
            "```",
            CNN_TRAIN_COMMAND,
            f"{script_command} --cnn-checkpoint {CNN_CHECKPOINT}",
            "```",
            "",
            vgg,
        ]
    m, arch = cnn.results.metrics, cnn.results.summary["checkpoint"]["arch"]
    v = m["variants"]["cam"]
    sizes = f", {cnn.parameters:,} parameters" + (f" against TS-CAM's {tscam.parameters:,}" if tscam else "")
    if tscam is None:
        training = "Its recipe was not compared with TS-CAM's."
    else:
        differences = recipe_differences(cnn.info, tscam.info)
        training = ("It was trained exactly as the TS-CAM checkpoint was (same recipe fields, the model aside)."
                    if not differences else
                    "Its recipe differs from the TS-CAM checkpoint's in: " + "; ".join(differences) + ".")
    return [row(f"CAM (CNN: {arch})", pct(v["top1_loc"]), pct(v["top5_loc"]), pct(v["gt_known_loc"]), *reference,
                cnn.results.summary["settings"]["cam_threshold"])], [
        f"The CAM row is CAM (Zhou et al. 2016) on a CNN, `{arch}` with timm arguments "
        f"`{json.dumps(cnn.info.timm_kwargs)}`{sizes}, trained by `{cnn.info.evaluation.get('recipe', '?')}`. {training} "
        f"Its Top-1 Cls is {pct(m['top1_cls'])} (TS-CAM: {pct(results.metrics['top1_cls'])}). Its numbers come "
        f"from `{cnn.results.path}`, written by:",
        "",
        "```",
        shlex.join(cnn.command),
        "```",
        "",
        vgg,
    ]


def fig7(results: Results, path: Path) -> None:
    """Accuracy against the IoU threshold (the paper's Fig. 7) as a PNG, through plotly and kaleido."""
    import plotly.graph_objects as go

    curve = results.metrics["loc_vs_iou"]
    x = curve["iou_thresholds"]
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=x, y=[100 * v for v in curve["gt_known"]], name="GT-known Loc", mode="lines+markers"))
    figure.add_trace(go.Scatter(x=x, y=[100 * v for v in curve["top1"]], name="Top-1 Loc", mode="lines+markers"))
    figure.update_layout(title=f"Localization accuracy vs IoU threshold ({results.name})", width=720, height=420,
                         xaxis_title="IoU threshold", yaxis_title="accuracy (%)", yaxis_range=[0, 100],
                         template="plotly_white")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_image(str(path))


def variant_table(results: Results, variant_runs: dict[MapSpec, Evaluation]) -> tuple[list[str], list[str]]:
    """Table 5's transformer rows and their note: each variant from its own run at its own validated
    threshold where ``variant_runs`` has it, else from the main run at the main threshold."""
    main_threshold = results.summary["settings"]["cam_threshold"]
    main = MapSpec.from_record(results.summary["settings"])
    lines = []
    for spec, label, paper_label in VARIANT_ROWS:
        run = variant_runs.get(spec)
        if run is not None:
            v, threshold = run.results.metrics, run.results.summary["settings"]["cam_threshold"]
        elif spec == dataclasses.replace(main, variant=spec.variant) and spec.variant in results.metrics["variants"]:
            v, threshold = results.metrics["variants"][spec.variant], main_threshold
        else:  # a map the main run does not score (signed S_c) and no run of its own
            continue
        ref = PAPER_TABLE5.get(f"{paper_label} (Deit-S)", (None,) * 3)
        lines.append(row(label, pct(v["top1_loc"]), pct(v["top5_loc"]), pct(v["gt_known_loc"]), *map(paper, ref),
                         threshold))
    if not variant_runs:
        return lines, [f"The transformer rows share the main run's CAM threshold ({main_threshold}): none was chosen "
                       "per map (a --threshold was given, or the checkpoint names no validation images apart from "
                       "the evaluated split to choose one on)."]
    note = ["Each row's CAM threshold is the one its own map scored best with (GT-known Loc) on the checkpoint's "
            "validation images, rebuilt from its recipe, as training chose TS-CAM's: never on the test split. "
            "The rows other than TS-CAM come from their own runs. The signed row couples S_c as the paper's Eq. 7 "
            "and the official code do, without the rectification tscam applies (tscam_core/explanation.py says "
            "why); the paper's figures beside it are its TS-CAM row:", "", "```"]
    note += [shlex.join(run.command) for run in variant_runs.values()]
    return lines, note + ["```"]


def render(results: Results, command: list[str], script_command: str, figure: Path, doc: Path,
           cnn: Evaluation | None = None, tscam: Evaluation | None = None,
           variant_runs: dict[MapSpec, Evaluation] | None = None) -> str:
    """The document; ``cnn`` fills Table 5's CAM row, ``tscam`` (this run's checkpoint) sizes and recipes it,
    ``variant_runs`` (map variant -> its run at its own validated threshold) give Table 5's other rows."""
    s = results.summary
    m, measured = s["metrics"], results.parsed.metrics
    ckpt, data = s["checkpoint"], s["dataset"]
    lines = [
        "# Results on the embedded benchmark",
        "",
        f"Generated by `{script_command}`; every number below comes from the results folder "
        f"`{results.path}`, written by:",
        "",
        "```",
        shlex.join(command),
        "```",
        "",
        f"- checkpoint: `{ckpt['source']}` (sha256 `{(ckpt.get('sha256') or '?')[:16]}...`), {ckpt['arch']}, "
        f"{ckpt.get('depth', '?')} blocks, {ckpt['num_classes']} classes",
        f"- dataset: `{in_repo(data['path'])}` ({data['kind']}), split `{data['split']}`, {data['num_images']} images",
        f"- settings: CAM threshold {s['settings']['cam_threshold']} (unless given, the one the checkpoint's "
        f"training chose on its validation split, held out of the training images), Top-1/Top-5 Loc at IoU > "
        f"{s['settings']['iou_threshold']} and GT-known Loc at IoU >= {s['settings']['iou_threshold']} (the official "
        f"code's tests), box pixels counted {s['settings'].get('box_convention', 'half_open')} (both reference codes "
        f"count inclusively), boxes in the {s['settings'].get('frame', 'model_input')} frame, MaxBoxAccV2/PxAP "
        f"threshold step {s['settings'].get('cam_curve_interval')}",
        f"- run: {s['created']}, {s['wall_time_s']:.0f} s, {s['images_per_second']:.1f} images/s on {s.get('device', '?')}; "
        f"torch {s['versions']['torch']}, timm {s['versions']['timm']}",
        "",
        "Numbers are percentages. The paper's columns are its CUB-200-2011 test-set figures (Deit-S, 224 x 224), "
        "copied for reference: a different dataset and model, so they frame the measurements rather than "
        "being targets.",
        "",
        "## Classification and localization (paper Table 1 / Table 8)",
        "",
        row("metric", "measured", "paper (CUB, TS-CAM)"),
        row("---", "---:", "---:"),
    ]
    for metric in METRICS:
        if metric.path in PAPER_MAIN:
            lines.append(row(metric.label, pct(measured.value(metric)), paper(PAPER_MAIN[metric.path])))
    lines += ["", "## Map variants (paper Table 5)", "",
              row("method", "Top-1 Loc", "Top-5 Loc", "GT-known Loc", "paper Top-1", "paper Top-5", "paper GT-known",
                  "CAM threshold"),
              row("---", "---:", "---:", "---:", "---:", "---:", "---:", "---:")]
    cam_row, cam_note = cam_rows(cnn, results, tscam, script_command)
    variant_rows, variant_note = variant_table(results, variant_runs or {})
    lines += [*cam_row, *variant_rows]
    lines += [
        "",
        *variant_note,
        "",
        *cam_note,
        "",
        "## Layer count (paper Table 12): TS-CAM with A* averaged over the first k blocks", "",
        row("k", "Top-1 Loc", "Top-5 Loc", "GT-known Loc", "paper Top-1", "paper Top-5", "paper GT-known"),
        row("---", "---:", "---:", "---:", "---:", "---:", "---:"),
    ]
    layers = m["layer_count"]
    for i, k in enumerate(layers["counts"]):
        ref = PAPER_TABLE12.get(k, (None,) * 3)
        top5 = layers.get("top5", [None] * len(layers["counts"]))[i]
        lines.append(row(k, pct(layers["top1"][i]), pct(top5), pct(layers["gt_known"][i]), *map(paper, ref)))
    lines += ["", f"The paper's rows are for k = 8..12 of Deit-S's 12 blocks; this model has {len(layers['counts'])}.",
              "", "## Accuracy vs IoU threshold (paper Fig. 7)", "",
              f"![Localization accuracy vs IoU threshold]({os.path.relpath(figure, doc.parent)})", "",
              row("IoU threshold", *m["loc_vs_iou"]["iou_thresholds"]),
              row("---", *(["---:"] * len(m["loc_vs_iou"]["iou_thresholds"]))),
              row("GT-known Loc", *map(pct, m["loc_vs_iou"]["gt_known"])),
              row("Top-1 Loc", *map(pct, m["loc_vs_iou"]["top1"])), "",
              "The paper shows this curve for CUB only as a figure (TS-CAM above CAM and RCAM at every IoU, with "
              "the gap growing at stricter IoU); it gives no numbers to copy.", "",
              "## Error analysis (paper Table 7, Algorithm 1)", "",
              row("method", "Cls", "M-Ins", "Part", "More", "OT", "correct (Top-1 Loc)"),
              row("---", "---:", "---:", "---:", "---:", "---:", "---:")]
    errors = m["error_analysis"]
    lines.append(row("measured (TS-CAM)", *(pct(errors[e], 2) for e in FAILURE_TYPES), pct(m["top1_loc"], 2)))
    if cnn is not None:
        cnn_metrics = cnn.results.metrics
        lines.append(row(f"measured (CAM, {cnn.results.summary['checkpoint']['arch']})",
                         *(pct(cnn_metrics["error_analysis"][e], 2) for e in FAILURE_TYPES), pct(cnn_metrics["top1_loc"], 2)))
    for label, ref in PAPER_TABLE7.items():
        lines.append(row(f"paper: {label}", *map(paper, ref), ""))
    thresholds = m["maxboxacc_v2"]["best_cam_threshold"]
    lines += ["", "M-Ins: the box touches two or more GT boxes with IoG > 0.3; the paper has no M-Ins on CUB "
              "(one bird per image). Part: IoP > 0.5. More: IoG >= 0.7. Part and More are judged on the GT box of "
              "highest IoU, as the official code's get_badcase_detail (lib/cams_deit.py). The types are exclusive, "
              "tested in this order.",
              "", "## The stricter metrics of Choe et al. (CVPR 2020)", "",
              row("metric", "measured", "best CAM threshold"), row("---", "---:", "---:"),
              *(choe_row(metric, measured.value(metric), thresholds) for metric in METRICS
                if metric.path not in PAPER_MAIN), "",
              "The TS-CAM paper reports neither metric. MaxBoxAccV2 sweeps the CAM threshold "
              f"(np.arange(0, 1, {s['settings'].get('cam_curve_interval')})), takes the box of every contour (holes' "
              "borders included, x1 and y1 clipped to the last column and row, [0, 0, 0, 0] where no pixel "
              "survives, as in their reference code, wsolevaluation's evaluation.py) and the best one per image, "
              "and keeps the best threshold for each IoU (IoU >= 0.3 / 0.5 / 0.7); PxAP is the average precision "
              "of the map's pixels against the object masks, over the same thresholds.", "",
              "## Accuracy vs CAM threshold (official largest-contour box)", "",
              row("CAM threshold", *(f"{t:g}" for t in m["loc_vs_cam_threshold"]["cam_thresholds"])),
              row("---", *(["---:"] * len(m["loc_vs_cam_threshold"]["cam_thresholds"]))),
              row("GT-known Loc", *map(pct, m["loc_vs_cam_threshold"]["gt_known"])),
              row("Top-1 Loc", *map(pct, m["loc_vs_cam_threshold"]["top1"])), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/tscam_fashion.safetensors")
    parser.add_argument("--dataset", default="data/fashion-cluttered")
    parser.add_argument("--split", default="test")
    parser.add_argument("--results", default="results/benchmark", help="results folder of the evaluation")
    parser.add_argument("--doc", default="docs/results.md")
    parser.add_argument("--figure", default="docs/figures/results_fig7.png")
    parser.add_argument("--threshold", type=float, help="CAM threshold of the official boxes (default: the one each "
                                                         "checkpoint's training chose on its validation split, else 0.1)")
    parser.add_argument("--cam-curve-interval", type=float, default=CAM_CURVE_INTERVAL,
                        help="MaxBoxAccV2 / PxAP threshold step, passed to every evaluation")
    parser.add_argument("--box-convention", default=DEFAULT_BOX_CONVENTION, choices=BOX_CONVENTIONS,
                        help="how IoU counts box pixels, passed to every evaluation")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--reuse", action="store_true", help="reuse the results folder if it is from this checkpoint")
    parser.add_argument("--cnn-checkpoint", help="a CNN CAM checkpoint (train/run.py --preset fashion-cnn) for "
                                                 "Table 5's CAM row; without it the row says 'not run'")
    parser.add_argument("--cnn-results", default="results/benchmark-cnn", help="results folder of its evaluation")
    args = parser.parse_args(argv)
    os.chdir(REPO)  # relative paths are the repository's, so the commands in the document run as shown
    paths = [("checkpoint", args.checkpoint), ("dataset", args.dataset)]
    if args.cnn_checkpoint:
        paths.append(("CNN checkpoint", args.cnn_checkpoint))
    missing = [f"{what} {path}" for what, path in paths if not Path(path).exists()]
    if missing:
        print("cannot write the results document; missing: " + ", ".join(missing), file=sys.stderr)
        if any(text.startswith("checkpoint") for text in missing):
            print("train one (train/run.py) or pass --checkpoint", file=sys.stderr)
        if any(text.startswith("CNN checkpoint") for text in missing):
            print(f"train it: {CNN_TRAIN_COMMAND}", file=sys.stderr)
        if any(text.startswith("dataset") for text in missing):
            print("generate it: python -m tscam_core.datasets.fashion --out data/fashion-cluttered", file=sys.stderr)
        return 2
    try:
        # Loading first refuses a checkpoint of the other family, with a CheckpointError naming it.
        tscam_model = load_model(args.checkpoint, family="tscam")
        tscam = evaluate_checkpoint(args, args.checkpoint, tscam_model, Path(args.results))
        main = MapSpec.from_record(tscam.results.summary["settings"])
        others = [spec for spec, _, _ in VARIANT_ROWS if spec != main]
        variant_runs = {}
        for spec, threshold in variant_thresholds(args, tscam_model, others).items():
            results, command = run_evaluation(args, args.checkpoint, results_folder(args.results, spec), threshold,
                                              spec)
            variant_runs[spec] = Evaluation(results, command, tscam.parameters, tscam.info)
        cnn = (evaluate_checkpoint(args, args.cnn_checkpoint, load_model(args.cnn_checkpoint, family="cnn_cam"),
                                   Path(args.cnn_results))
               if args.cnn_checkpoint else None)
    except TSCAMError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    doc, figure = Path(args.doc).resolve(), Path(args.figure).resolve()
    fig7(tscam.results, figure)
    script_command = "python scripts/make_results_doc.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    doc.write_text(render(tscam.results, tscam.command, script_command.strip(), figure, doc, cnn, tscam, variant_runs),
                   encoding="utf-8")
    print(f"wrote {doc} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
