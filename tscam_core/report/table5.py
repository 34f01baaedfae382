"""Table 5 of the paper on the benchmark: the map variants (TransAttention, TransCAM, TS-CAM, TS-CAM with
S_c signed) and CAM on a CNN, each with its interval, and each other map's paired difference from TS-CAM
on the same images."""

from __future__ import annotations

import json
import shlex
from typing import NamedTuple

from ..checkpoint import ModelInfo
from ..explanation import MapSpec
from ..results import Results
from .columns import column_hits, interval, paired
from .markdown import cell, paper, pct, row, rule

PAPER_TABLE5 = {  # Top-1, Top-5, GT-known Loc on CUB, in percent
    "CAM (VGG16)": (44.2, 52.2, 58.0),
    "CAM (GoogLeNet)": (41.2, 51.7, 55.1),
    "TransAttention (Deit-S)": (58.9, 69.7, 73.0),
    "TransCAM (Deit-S)": (17.7, 18.3, 18.3),
    "TS-CAM (Deit-S)": (71.3, 83.8, 87.8),
}
#: TS-CAM with S_c coupled signed, as the paper's Eq. 7 and the official code do.
SIGNED = MapSpec("tscam", signed=True)
#: Table 5's transformer rows: (map, label, the paper's row it sits beside).
VARIANT_ROWS = ((MapSpec("trans_attention"), "TransAttention", "TransAttention"),
                (MapSpec("trans_cam"), "TransCAM", "TransCAM"), (MapSpec("tscam"), "TS-CAM", "TS-CAM"),
                (SIGNED, "TS-CAM, S_c signed (Eq. 7 as published)", "TS-CAM"))
#: The per-image columns of Top-1, Top-5 and GT-known Loc.
LOC_COLUMNS = ("top1_loc", "top5_loc", "gt_known")
#: How the CAM row is produced when it was not: the training recipe, then the script with the checkpoint.
CNN_TRAIN_COMMAND = "python train/run.py --preset fashion-cnn --name fashion-cnn"
CNN_CHECKPOINT = "runs/fashion-cnn/best.safetensors"
#: Recipe fields that name the model or only where and how fast a run went: not part of "trained the same way".
NOT_RECIPE = {"model_family", "arch", "timm_extra", "img_size", "patch_size", "depth", "embed_dim", "num_heads",
              "preset", "name", "output", "export", "device", "workers", "threads", "save_every", "progress",
              "max_steps", "epochs_done", "steps_done", "amp", "channels_last", "on_error"}


class Evaluation(NamedTuple):
    """One evaluated checkpoint: its results folder, the command that wrote it, its size and metadata."""

    results: Results
    command: list[str]
    parameters: int
    info: ModelInfo


def recipe_differences(cnn: ModelInfo, tscam: ModelInfo) -> list[str]:
    """Training settings in which the two checkpoints' recipes differ (the model itself aside: SCM's own
    settings, ``scm_*``, shape an SCM model, and recipes written before SCM lack them)."""
    keys = sorted(key for key in (set(cnn.recipe) | set(tscam.recipe)) - NOT_RECIPE if not key.startswith("scm_"))
    return [f"{key} {cnn.recipe.get(key)!r} (TS-CAM: {tscam.recipe.get(key)!r})" for key in keys
            if cnn.recipe.get(key) != tscam.recipe.get(key)]


def loc_cells(results: Results) -> list[str]:
    """Top-1, Top-5 and GT-known Loc of a run's own map, each with its interval."""
    return [cell(interval(column_hits(results, column))) for column in LOC_COLUMNS]


def difference_cells(other: Results, tscam: Results) -> list[str]:
    """``other``'s map minus TS-CAM's, image by image, for each of the three accuracies."""
    return [cell(paired(column_hits(other, column), column_hits(tscam, column))) for column in LOC_COLUMNS]


def variant_rows(results: Results, runs: dict[MapSpec, Results]) -> tuple[list[str], list[str]]:
    """Table 5's transformer rows and their paired differences from TS-CAM: each variant from its own run
    where ``runs`` has it, else from the main run (GT-known Loc alone kept per image there)."""
    main = MapSpec.from_record(results.summary["settings"])
    threshold = results.summary["settings"]["cam_threshold"]
    lines, differences = [], []
    for spec, label, paper_label in VARIANT_ROWS:
        ref = map(paper, PAPER_TABLE5.get(f"{paper_label} (Deit-S)", (None,) * 3))
        run = results if spec == main else runs.get(spec)
        if run is not None:
            lines.append(row(label, *loc_cells(run), *ref, run.summary["settings"]["cam_threshold"]))
            if spec != main:
                differences.append(row(label, *difference_cells(run, results)))
        elif MapSpec(spec.variant, main.blocks, main.signed) == spec and spec.variant in results.metrics["variants"]:
            v, column = results.metrics["variants"][spec.variant], f"gt_known_{spec.variant}"
            lines.append(row(label, pct(v["top1_loc"]), pct(v["top5_loc"]),
                             cell(interval(column_hits(results, column))), *ref, threshold))
            differences.append(row(label, "-", "-", cell(paired(column_hits(results, column),
                                                                column_hits(results, "gt_known")))))
    return lines, differences


def threshold_note(val_commands: list[list[str]], run_commands: list[list[str]], shared: float) -> list[str]:
    """How the rows' CAM thresholds were chosen, with the commands of the runs behind the rows."""
    if not val_commands:
        return [f"The transformer rows share the main run's CAM threshold ({shared}): none was chosen per map (a "
                "--threshold was given, or the dataset has no val split to choose one on). Their Top-1 and Top-5 "
                "Loc come from the main run's counts, which keep no per-image column: no interval."]
    return ["Each row's CAM threshold is the one its own map scores best with (GT-known Loc, official largest-contour "
            "box) on the dataset's val split, from an evaluation of that split: never on the test split. The "
            "signed row couples S_c as the paper's Eq. 7 and the official code do, without the rectification "
            "tscam applies (tscam_core/explanation.py says why); the paper's figures beside it are its TS-CAM row. "
            "The threshold choices, then the rows other than TS-CAM:", "", "```",
            *map(shlex.join, val_commands), *map(shlex.join, run_commands), "```"]


def cam_rows(cnn: Evaluation | None, tscam: Evaluation, script_command: str) -> tuple[list[str], list[str], list[str]]:
    """Table 5's CAM row, its paired difference from TS-CAM, and the paragraph under the table: what was
    measured, or how to measure it."""
    reference = map(paper, PAPER_TABLE5["CAM (VGG16)"])
    vgg = ("The paper's CAM figures beside it are VGG16's on CUB (GoogLeNet's: "
           + " / ".join(map(paper, PAPER_TABLE5["CAM (GoogLeNet)"])) + ").")
    if cnn is None:
        return [row("CAM (CNN of comparable size)", "not run", "", "", *reference, "")], [], [
            "The CAM row was not run. It needs the CNN CAM baseline (CAM of Zhou et al. 2016 on a timm CNN "
            "of TS-CAM's size: the `fashion-cnn` preset of `tscam_core/recipes.py`) trained by the same "
            "recipe on the same data, then this script with its checkpoint:",
            "", "```", CNN_TRAIN_COMMAND, f"{script_command} --cnn-checkpoint {CNN_CHECKPOINT}", "```", "", vgg]
    m, arch = cnn.results.metrics, cnn.results.summary["checkpoint"]["arch"]
    differences = recipe_differences(cnn.info, tscam.info)
    training = ("It was trained exactly as the TS-CAM checkpoint was (same recipe fields, the model aside)."
                if not differences else
                "Its recipe differs from the TS-CAM checkpoint's in: " + "; ".join(differences) + ".")
    label = f"CAM (CNN: {arch})"
    return ([row(label, *loc_cells(cnn.results), *reference, cnn.results.summary["settings"]["cam_threshold"])],
            [row(label, *difference_cells(cnn.results, tscam.results))], [
        f"The CAM row is CAM (Zhou et al. 2016) on a CNN, `{arch}` with timm arguments "
        f"`{json.dumps(cnn.info.timm_kwargs)}`, {cnn.parameters:,} parameters against TS-CAM's "
        f"{tscam.parameters:,}, trained by `{cnn.info.evaluation.get('recipe', '?')}`. {training} Its Top-1 Cls is "
        f"{pct(m['top1_cls'])} (TS-CAM: {pct(tscam.results.metrics['top1_cls'])}). Its numbers come from "
        f"`{cnn.results.path}`, written by:", "", "```", shlex.join(cnn.command), "```", "", vgg])


def table5(tscam: Evaluation, runs: dict[MapSpec, Results], cnn: Evaluation | None, note: list[str],
           script_command: str) -> list[str]:
    """The section: rows with intervals, the paired differences from TS-CAM, the thresholds' and CAM row's notes."""
    cam_row, cam_difference, cam_note = cam_rows(cnn, tscam, script_command)
    rows, differences = variant_rows(tscam.results, runs)
    return ["## Map variants (paper Table 5)", "",
            row("method", "Top-1 Loc", "Top-5 Loc", "GT-known Loc", "paper Top-1", "paper Top-5", "paper GT-known",
                "CAM threshold"), rule(8), *cam_row, *rows, "",
            "Each map minus TS-CAM on the same images (paired: the interval is that of the per-image difference, "
            "so it counts only the images on which the two maps disagree):", "",
            row("map - TS-CAM", "Top-1 Loc", "Top-5 Loc", "GT-known Loc"), rule(4), *cam_difference, *differences,
            "", *note, "", *cam_note]
