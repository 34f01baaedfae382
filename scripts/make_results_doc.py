"""Write docs/results.md: the paper's CUB tables, reproduced on the embedded benchmark from evaluation runs.

    python scripts/make_results_doc.py --checkpoint checkpoints/tscam_fashion.safetensors \\
        --dataset data/fashion-cluttered [--cnn-checkpoint runs/fashion-cnn/best.safetensors] \\
        [--second-seed-dataset data/fashion-cluttered-seed1] [--methods rollout,gradcam] \\
        [--scm-checkpoint runs/fashion-scm/best.safetensors]

Every number comes from ``python -m tscam_core.evaluate`` runs (each a subprocess of the command the
page shows, ``tscam_core/report/runs.py``), every figure with its 95% bootstrap interval over the
images where the per-image table allows it (``tscam_core/report/columns.py``). The main run holds
Table 12's layer counts, Fig. 7's curve, Table 7's error analysis and MaxBoxAccV2 / PxAP. Every
table row's CAM threshold, the main one's included, is the one its map scores best with on the
dataset's val split, from a run of that split (``tscam_core/report/thresholds.py``): never on test.
Without a val split (or with --threshold) the main run uses the checkpoint's threshold and the map
variants its counts.

- Table 5: the other maps (A* alone, S_c alone, TS-CAM with S_c coupled signed, as published) get
  a run each, with their paired difference from TS-CAM on the same images. ``--cnn-checkpoint`` (a
  CNN CAM trained by ``train/run.py --preset fashion-cnn --name fashion-cnn``) adds its CAM row;
  without it the row says "not run" and gives the commands that would fill it.
- ``--second-seed-dataset``: Table 5 again on a test split the generator made with another seed, at
  the same thresholds.
- Whether the paper's ordering of the maps shows (#17): TS-CAM against A* and S_c alone, paired, and
  the controlled study of recipes in ``experiments/study.md``.
- What the reference conventions moved (#18): the main run again under tscam's previous ones.
- The methods table: TS-CAM, its Table 5 variants and the CNN's CAM from the runs above, then every
  method ``--methods`` names (``tscam_core.methods``, ``evaluate --method``) and SCM on the checkpoint
  ``--scm-checkpoint`` gives (``train/run.py --preset fashion-scm --name fashion-scm``), each with its
  paired GT-known difference from TS-CAM and the cost that ``benchmarks/methods.py`` measured
  (``--methods-benchmark``).

``--reuse`` keeps a results folder made by the same command from the same checkpoint file. The
paper's CUB-200-2011 figures are copied beside the measurements for reference only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path
from typing import NamedTuple

from tscam_core import methods
from tscam_core.cnn_cam import CNNCAM
from tscam_core.errors import TSCAMError
from tscam_core.explanation import MapSpec
from tscam_core.loading import load_model
from tscam_core.metrics import CAM_CURVE_INTERVAL
from tscam_core.model import TSCAM
from tscam_core.overlaps import BOX_CONVENTIONS, DEFAULT_BOX_CONVENTION
from tscam_core.report import conventions, ordering, seeds, tables
from tscam_core.report.methods_table import MethodRun, matching_costs, methods_table
from tscam_core.report.runs import EvalRun, run
from tscam_core.report.table5 import CNN_TRAIN_COMMAND, VARIANT_ROWS, Evaluation, table5, threshold_note
from tscam_core.report.thresholds import has_validation, validation_threshold
from tscam_core.results import Results

REPO = Path(__file__).resolve().parents[1]
#: The TS-CAM checkpoint's own map, the main run's.
MAIN_MAP = MapSpec()
#: The controlled study of training recipes behind the ordering section (issue #17).
STUDY = Path("experiments/study.md")


def in_repo(path: str) -> str:
    """``path`` relative to the repository where it lies inside it: the document names no machine's folders."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else path


def suffixed(folder: Path, suffix: str) -> Path:
    """A row's own folder beside the main one: ``results/benchmark-trans_cam``, ``results/benchmark-val``."""
    return Path(f"{folder}-{suffix}")


class Chosen(NamedTuple):
    """A row's run at the CAM threshold chosen for its map, and the val run that chose it (None: not chosen)."""

    plan: EvalRun
    results: Results
    command: list[str]
    val_command: list[str] | None


class Runs:
    """The page's evaluations: each run (or reused), its CAM threshold chosen on the val split where there is one."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.validation = args.threshold is None and has_validation(args.dataset, args.split)

    def plan(self, checkpoint: str, out: Path, threshold: float, **fields) -> EvalRun:
        a = self.args
        return EvalRun(checkpoint, a.dataset, a.split, out, threshold, cam_curve_interval=a.cam_curve_interval,
                       box_convention=a.box_convention, batch_size=a.batch_size, threads=a.threads,
                       device=a.device, limit=a.limit, **fields)

    def run(self, plan: EvalRun) -> tuple[Results, list[str]]:
        return run(plan, self.args.reuse, REPO)

    def chosen(self, plan: EvalRun) -> Chosen:
        """``plan`` at --threshold; else at its map's best on an evaluation of the val split; else as planned."""
        val_command = None
        if self.args.threshold is not None:
            plan = dataclasses.replace(plan, threshold=self.args.threshold)
        elif self.validation:
            val, val_command = self.run(dataclasses.replace(plan, split="val", out=suffixed(plan.out, "val")))
            plan = dataclasses.replace(plan, threshold=validation_threshold(val))
        return Chosen(plan, *self.run(plan), val_command)


def method_row(method: methods.Method, chosen: Chosen, checkpoint: str | None = None) -> MethodRun:
    """``chosen`` as a row of the methods table; ``checkpoint`` names a model other than the page's."""
    label = method.label + (f" (checkpoint `{in_repo(checkpoint)}`)" if checkpoint else "")
    return MethodRun(method.name, label, chosen.plan.threshold, chosen.results,
                     [command for command in (chosen.val_command, chosen.command) if command])


def method_run(runs: Runs, name: str, checkpoint: str, model: TSCAM, out: Path) -> Chosen:
    """Registry method ``name`` of ``model`` on the val split (its threshold chosen there), then on the evaluated split."""
    if not runs.validation:
        raise ValueError("--methods chooses each method's CAM threshold on the dataset's val split, which "
                         f"{runs.args.dataset} lacks (or --threshold fixed one): generate it with --val")
    methods.for_model(name, model)
    return runs.chosen(runs.plan(checkpoint, out, model.info.default_threshold()[0], method=name))


def method_rows(runs: Runs, views: dict[MapSpec, Chosen], cnn: Chosen | None, names: list[str],
                model: TSCAM) -> list[MethodRun]:
    """The methods table: TS-CAM and its Table 5 variants (and the CNN's CAM) from their runs above, then
    each other method named, then SCM on its own checkpoint. None without a val split to choose on."""
    if not runs.validation and not (names or runs.args.scm_checkpoint):
        return []  # nothing asked for needs one (a method named without a val split is refused by method_run)
    rows = [method_row(methods.get(spec.key), chosen) for spec, chosen in views.items() if spec.key in methods.names()]
    if cnn is not None:
        rows.append(method_row(methods.get("cam"), cnn, runs.args.cnn_checkpoint))
    shown = {row.name for row in rows}
    for name in names:
        if name not in shown:
            chosen = method_run(runs, name, runs.args.checkpoint, model, suffixed(Path(runs.args.results), f"method-{name}"))
            rows.append(method_row(methods.get(name), chosen))
    if runs.args.scm_checkpoint:
        scm = load_model(runs.args.scm_checkpoint, family="scm")
        chosen = method_run(runs, "scm", runs.args.scm_checkpoint, scm, Path(runs.args.scm_results))
        rows.append(method_row(methods.get("scm"), chosen, runs.args.scm_checkpoint))
    return rows


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


def header(tscam: Evaluation, script_command: str, threshold_source: str) -> list[str]:
    """The page's title, the command that made it, and what was evaluated how."""
    s, results = tscam.results.summary, tscam.results
    ckpt, data, settings = s["checkpoint"], s["dataset"], s["settings"]
    return [
        "# Results on the embedded benchmark", "",
        f"Generated by `{script_command}`; every number below comes from the results folder `{results.path}` "
        "and the other folders named with their commands, the main one written by:", "",
        "```", shlex.join(tscam.command), "```", "",
        f"- checkpoint: `{ckpt['source']}` (sha256 `{(ckpt.get('sha256') or '?')[:16]}...`), {ckpt['arch']}, "
        f"{ckpt.get('depth', '?')} blocks, {ckpt['num_classes']} classes",
        f"- dataset: `{in_repo(data['path'])}` ({data['kind']}), split `{data['split']}`, {data['num_images']} images",
        f"- settings: CAM threshold {settings['cam_threshold']} ({threshold_source}), Top-1/Top-5 Loc at IoU > "
        f"{settings['iou_threshold']} and GT-known Loc at IoU >= {settings['iou_threshold']} (the official code's "
        f"tests), box pixels counted {settings.get('box_convention', 'half_open')} (both reference codes count "
        f"inclusively), boxes in the {settings.get('frame', 'model_input')} frame, MaxBoxAccV2/PxAP threshold step "
        f"{settings.get('cam_curve_interval')}",
        f"- run: {s['created']}, {s['wall_time_s']:.0f} s, {s['images_per_second']:.1f} images/s on "
        f"{s.get('device', '?')}; torch {s['versions']['torch']}, timm {s['versions']['timm']}", "",
        "Numbers are percentages. The paper's columns are its CUB-200-2011 test-set figures (Deit-S, 224 x 224), "
        "copied for reference: a different dataset and model, so they frame the measurements rather than "
        "being targets. " + tables.INTERVALS_NOTE,
    ]


def render(tscam: Evaluation, script_command: str, threshold_source: str, sections: list[list[str]]) -> str:
    """The page: its header, then each section, a blank line apart."""
    lines = header(tscam, script_command, threshold_source)
    for section in sections:
        if section:
            lines += ["", *section]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/tscam_fashion.safetensors")
    parser.add_argument("--dataset", default="data/fashion-cluttered")
    parser.add_argument("--split", default="test")
    parser.add_argument("--results", default="results/benchmark", help="results folder of the evaluation")
    parser.add_argument("--doc", default="docs/results.md")
    parser.add_argument("--figure", default="docs/figures/results_fig7.png")
    parser.add_argument("--threshold", type=float, help="CAM threshold of every row (default: each map's best on the "
                                                         "dataset's val split; without one the checkpoint's)")
    parser.add_argument("--cam-curve-interval", type=float, default=CAM_CURVE_INTERVAL,
                        help="MaxBoxAccV2 / PxAP threshold step, passed to every evaluation")
    parser.add_argument("--box-convention", default=DEFAULT_BOX_CONVENTION, choices=BOX_CONVENTIONS,
                        help="how IoU counts box pixels, passed to every evaluation")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images of every split")
    parser.add_argument("--reuse", action="store_true", help="reuse a results folder made by the same command")
    parser.add_argument("--cnn-checkpoint", help="a CNN CAM checkpoint (train/run.py --preset fashion-cnn) for "
                                                 "Table 5's CAM row; without it the row says 'not run'")
    parser.add_argument("--cnn-results", default="results/benchmark-cnn", help="results folder of its evaluation")
    parser.add_argument("--scm-checkpoint", help="an SCM checkpoint (train/run.py --preset fashion-scm) for the "
                                                 "methods table's SCM row")
    parser.add_argument("--scm-results", default="results/benchmark-scm", help="results folder of its evaluation")
    parser.add_argument("--second-seed-dataset", help="the benchmark generated with another seed "
                                                      "(python -m tscam_core.datasets.fashion --seed 1 ...): Table 5 "
                                                      "on its test split at the same thresholds")
    parser.add_argument("--methods", default="", help="comma-separated tscam_core.methods names for the methods "
                                                      f"table ({', '.join(methods.names())}); default: none")
    parser.add_argument("--methods-benchmark", default="benchmarks/methods.json",
                        help="the JSON of benchmarks/methods.py: each method's cost per image")
    return parser.parse_args(argv)


def missing_inputs(args: argparse.Namespace) -> list[str]:
    paths = [("checkpoint", args.checkpoint), ("dataset", args.dataset), ("CNN checkpoint", args.cnn_checkpoint),
             ("SCM checkpoint", args.scm_checkpoint),
             ("second-seed dataset", args.second_seed_dataset)]
    return [f"{what} {path}" for what, path in paths if path and not Path(path).exists()]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.chdir(REPO)  # relative paths are the repository's, so the commands in the document run as shown
    missing = missing_inputs(args)
    if missing:
        print("cannot write the results document; missing: " + ", ".join(missing), file=sys.stderr)
        hints = {"checkpoint": "train one (train/run.py) or pass --checkpoint", "CNN": f"train it: {CNN_TRAIN_COMMAND}",
                 "SCM": "train it: python train/run.py --preset fashion-scm --name fashion-scm",
                 "dataset": "generate it: python -m tscam_core.datasets.fashion --out data/fashion-cluttered --val 1000",
                 "second-seed": "generate it: python -m tscam_core.datasets.fashion --out data/fashion-cluttered-seed1 "
                                "--seed 1 --train 0 --test 2000"}
        for key, hint in hints.items():
            if any(text.startswith(key) for text in missing):
                print(hint, file=sys.stderr)
        return 2
    results = Path(args.results)
    try:
        # Loading first refuses a checkpoint of the other family, with a CheckpointError naming it.
        model = load_model(args.checkpoint, family="tscam")
        runs = Runs(args)
        main_run = checkpoint_run(runs, args.checkpoint, model, results)  # the model's own map: TS-CAM
        variants = {}  # each other map at its own threshold; without a val split, the main run's counts
        for spec, _, _ in VARIANT_ROWS if runs.validation else ():
            if spec != MAIN_MAP:
                variants[spec] = runs.chosen(runs.plan(args.checkpoint, suffixed(results, spec.key.replace("+", "_")),
                                                       main_run.plan.threshold, spec=spec))
        cnn_model = load_model(args.cnn_checkpoint, family="cnn_cam") if args.cnn_checkpoint else None
        cnn = checkpoint_run(runs, args.cnn_checkpoint, cnn_model, Path(args.cnn_results)) if cnn_model else None
        second = second_seed(runs, {MAIN_MAP: main_run, **variants})
        previous = runs.run(dataclasses.replace(main_run.plan, out=suffixed(results, "previous-conventions"),
                                                **conventions.PREVIOUS_CONVENTIONS))
        names = [name.strip() for name in args.methods.split(",") if name.strip()]
        table = method_rows(runs, {MAIN_MAP: main_run, **variants}, cnn, names, model)
    except (TSCAMError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    doc, figure = Path(args.doc).resolve(), Path(args.figure).resolve()
    tscam = Evaluation(main_run.results, main_run.command, parameters(model), model.info)
    fig7(tscam.results, figure)
    script_command = "python scripts/make_results_doc.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    threshold_source = ("given with --threshold" if args.threshold is not None else
                        "its best GT-known Loc on the val split, chosen by the first run of the Table 5 notes"
                        if runs.validation else "the one the checkpoint's training chose on its validation images")
    chosen = [main_run, *variants.values(), *([cnn] if cnn else [])]
    note = threshold_note([c.val_command for c in chosen if c.val_command], [c.command for c in variants.values()],
                          main_run.plan.threshold)
    cnn_evaluation = Evaluation(cnn.results, cnn.command, parameters(cnn_model), cnn_model.info) if cnn else None
    costs, benchmark = matching_costs(Path(args.methods_benchmark), model.info, *([cnn_model.info] if cnn else []))
    r = tscam.results
    attention, semantic = (variants.get(MapSpec(variant)) for variant in ("trans_attention", "trans_cam"))
    order = ordering.ordering_section(r, attention.results, semantic.results, STUDY) if attention and semantic else []
    sections = [tables.main_table(r),
                table5(tscam, {spec: c.results for spec, c in variants.items()}, cnn_evaluation, note,
                       script_command.strip()),
                second, order, methods_table(table, costs, benchmark) if table else [], tables.layer_table(r),
                tables.iou_table(r, figure, doc), tables.error_table(r, cnn.results if cnn else None),
                tables.choe_table(r), tables.cam_threshold_table(r),
                conventions.conventions_table(r, previous[0], [tscam.command, previous[1]])]
    doc.write_text(render(tscam, script_command.strip(), threshold_source, sections), encoding="utf-8")
    print(f"wrote {doc} and {figure}")
    return 0


def parameters(model: TSCAM | CNNCAM) -> int:
    return sum(p.numel() for p in model.parameters())


def checkpoint_run(runs: Runs, checkpoint: str, model: TSCAM | CNNCAM, out: Path) -> Chosen:
    """``model``, loaded from ``checkpoint``, on its own map at its chosen threshold (else its checkpoint's)."""
    return runs.chosen(runs.plan(checkpoint, out, model.info.default_threshold()[0]))


def second_seed(runs: Runs, rows: dict[MapSpec, Chosen]) -> list[str]:
    """Table 5's rows that have runs of their own, on the second draw's test split at the same thresholds."""
    dataset = runs.args.second_seed_dataset
    if not dataset:
        return []
    pairs, commands = [], []
    for spec, label, _ in VARIANT_ROWS:
        if spec in rows:
            plan = rows[spec].plan
            results, command = runs.run(dataclasses.replace(plan, dataset=dataset, out=suffixed(plan.out, "second-seed")))
            pairs.append(seeds.SeedPair(label, rows[spec].results, results))
            commands.append(command)
    return seeds.seed_table(pairs, in_repo(runs.args.dataset), in_repo(dataset), commands)


if __name__ == "__main__":
    sys.exit(main())
