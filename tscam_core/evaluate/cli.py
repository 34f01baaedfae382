"""The evaluation's command line: ``python -m tscam_core.evaluate`` (see the package's docstring)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from .. import methods
from ..datasets import open_dataset
from ..errors import TSCAMError
from ..explanation import CAM_VARIANTS, VARIANTS, Blocks, MapSpec, variants_for
from ..loading import load_model
from ..metrics import CAM_CURVE_INTERVAL
from ..overlaps import BOX_CONVENTIONS, DEFAULT_BOX_CONVENTION
from ..results import Results
from ..summary import METRICS
from .runner import evaluate
from .settings import PROCESS_POOL_CORES, THREAD_POOL_SIZE, EvalSettings, default_loader_workers


def parse_layers(text: str) -> Blocks:
    """--layers: "all", "first:k", "last:k", or 0-based block indices "0,3,5" ("3," for block 3 alone)."""
    if "," in text:
        try:
            return tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"--layers {text!r}: not a list of block indices") from error
    if text.strip().lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(
            f"--layers {text}: write first:{text} for the first {text} blocks, or {text}, for block {text} alone")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tscam_core.evaluate", description=sys.modules[__package__].__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, timm:NAME or hf://owner/repo/file")
    parser.add_argument("--dataset", required=True, help="dataset folder (CUB layout or ILSVRC)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--kind", default="auto", choices=("auto", "cub", "ilsvrc"))
    parser.add_argument("--out", required=True, help="results folder to write, e.g. results/<name>")
    parser.add_argument("--name", help="run name shown by the dashboard (default: the folder name)")
    parser.add_argument("--threshold", type=float,
                        help="CAM threshold of the paper's boxes (default: the checkpoint's, chosen on its "
                             "validation images; else the paper's 0.1)")
    parser.add_argument("--method",
                        help=f"localization method scored: one of {', '.join(methods.names())}, or a TS-CAM map "
                             "such as tscam@last:4+signed (default: the model's own map, set by the three below)")
    parser.add_argument("--layers", type=parse_layers,
                        help="blocks averaged into A*: all (default), first:k, last:k, or block indices 0,3,5")
    parser.add_argument("--variant", choices=VARIANTS + CAM_VARIANTS,
                        help="map of the main setting (default: the model's own, tscam or a CNN's cam)")
    parser.add_argument("--signed-class-maps", action="store_true",
                        help="couple the signed S_c, as the paper's Eq. 7 and the official code do (default: rectified)")
    parser.add_argument("--iou-threshold", type=float, default=0.5,
                        help="Top-1/Top-5 Loc need IoU above it, GT-known Loc at least it (the official code's)")
    parser.add_argument("--box-convention", default=DEFAULT_BOX_CONVENTION, choices=BOX_CONVENTIONS,
                        help="how IoU counts box pixels: inclusive (+1 each side, both reference codes) or half_open")
    parser.add_argument("--cam-curve-interval", type=float, default=CAM_CURVE_INTERVAL,
                        help=f"MaxBoxAccV2 / PxAP threshold step (default {CAM_CURVE_INTERVAL}, Choe et al.'s "
                             "training and inference code; 0.01 is their evaluation.py's command-line default)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int,
                        help=f"workers for the per-image box work (default: {THREAD_POOL_SIZE} threads at most, "
                             "or a process per core but one)")
    parser.add_argument("--pool", default="auto", choices=("auto", "thread", "process"),
                        help=f"kind of those workers (auto: processes from {PROCESS_POOL_CORES} cores on, else threads)")
    parser.add_argument("--workers", type=int, default=default_loader_workers(),
                        help="data loader processes decoding images (0: a thread of this process)")
    parser.add_argument("--model-threads", type=int,
                        help="torch CPU threads for the model during the run (default: torch's); a small model on "
                             "few cores runs faster overall with 1, leaving the other cores to the box work")
    parser.add_argument("--eager", action="store_true",
                        help="run the model op by op instead of as one traced graph (same numbers, slower beside "
                             "the scoring threads)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--thumbnails", type=int, default=16, help="images sampled for success thumbnails")
    parser.add_argument("--on-error", default="raise", choices=("raise", "skip"),
                        help="bad annotation lines and images that cannot be decoded: stop, or skip and list them")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    args = parser.parse_args(argv)
    try:
        check_device(args.device)
        scored = scored_map(args)
        model = load_model(args.checkpoint, device=args.device, family=None)
        threshold, why = (args.threshold, "given with --threshold") if args.threshold is not None else \
            model.info.default_threshold()
        settings = EvalSettings(
            cam_threshold=threshold,
            **(scored or {"map": MapSpec(args.variant or variants_for(model.depth)[0], "all" if args.layers is None else args.layers, args.signed_class_maps)}),
            iou_threshold=args.iou_threshold, box_convention=args.box_convention,
            cam_curve_interval=args.cam_curve_interval, batch_size=args.batch_size, threads=args.threads,
            pool=args.pool, loader_workers=args.workers, model_threads=args.model_threads, graph=not args.eager,
            thumbnails=args.thumbnails, limit=args.limit,
        )
        method = methods.for_model(settings.scored, model)
        own = method.spec is not None or args.threshold is not None
        print(f"CAM threshold {threshold:g}: {why}" + ("" if own else f", for the checkpoint's own map, not for "
              f"{method.name}'s: pick one on a validation split (loc_vs_cam_threshold) and pass --threshold"),
              file=sys.stderr)
        print(method_line(settings), file=sys.stderr)
        dataset = open_dataset(args.dataset, args.split, args.kind, args.on_error)
        results = evaluate(model, dataset, args.out, settings, name=args.name, dataset_kind=args.kind,
                           overwrite=args.overwrite)
    except (TSCAMError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report(results))
    return 0


def scored_map(args: argparse.Namespace) -> dict[str, str]:
    """``{"method": NAME}`` for ``EvalSettings`` when --method is given (and none of the options that
    name a map piece by piece is); else nothing, and the map is made of those options."""
    pieces = [flag for flag, value in (("--variant", args.variant), ("--layers", args.layers),
                                       ("--signed-class-maps", args.signed_class_maps or None)) if value is not None]
    if args.method is None:
        return {}
    if pieces:
        raise ValueError(f"--method names the whole map, so {' and '.join(pieces)} cannot go with it; write a "
                         "TS-CAM map's blocks and sign into the name instead, e.g. --method tscam@last:4+signed")
    return {"method": args.method}


def method_line(settings: EvalSettings) -> str:
    """What is scored, what it costs, and how the model runs: as one traced graph only where the maps
    scored are the explain pass's own (a view of the explanation)."""
    method = settings.scored
    if settings.uses_graph:
        how = "the model runs as one traced graph"
    elif method.spec is not None:
        how = "the model runs eagerly (--eager)"
    else:
        how = ("the model runs eagerly: the traced graph is the explain pass alone, whose maps are TS-CAM's "
               "and its variants', and here only ranks the classes")
    return f"Method {method.name} ({method.label}): {methods.COST_LABELS[method.cost]}; {how}"


def check_device(name: str) -> None:
    """--device names a device torch knows and this machine has (a ValueError naming it otherwise)."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def report(results: Results) -> str:
    """The run's scalar metrics, in the catalogue's order and with its labels (a metric the run lacks,
    such as PxAP without masks, is left out)."""
    parsed = results.parsed
    width = max(len(metric.label) for metric in METRICS) + 2
    lines = [f"{results.path}: {parsed.dataset.num_images} images, {results.summary['images_per_second']:.1f} images/s"]
    for metric in METRICS:
        value = parsed.metrics.value(metric)
        if value is not None:
            lines.append(f"  {metric.label:<{width}}{100 * value:6.2f}")
    return "\n".join(lines)
