"""Section 7: every localization method of ``tscam_core.methods`` side by side: time per image and peak memory.

    python benchmarks/methods.py [--quick] [--device cuda] [--json benchmarks/methods.json]

For deit_small_patch16_224 (random weights, 200 classes as CUB) and the shipped checkpoint, at
224 px (the shipped model at its own input size) and batch sizes 1 and 16: each method that fits
the model (SCM's on an SCM twin of the model, ``scm_twin``; CNN CAM's on the CNN trained beside the
model's architecture, ``cnn_twin``) makes the maps of one class per
image (the top-1 predicted class), timed interleaved with every other method and with TS-CAM's
explain (the maps of every class from one forward), the ratios taken against explain. Writes the
costs as JSON, which scripts/make_results_doc.py reads for its methods table, and prints them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import torch

from benchmarks import measure
from benchmarks.gradcam_compare import explain_all_classes
from benchmarks.report import Row, markdown_table
from tscam_core import TSCAM, ModelInfo, build_model, methods
from tscam_core.cnn_cam import CNNCAM
from tscam_core.recipes import PRESETS, preset_config
from tscam_core.report.methods_table import MethodCost
from tscam_core.scm import SCM, CalibrationSettings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "benchmarks" / "methods.json"
METHOD = ("every method of tscam_core.methods that fits the model (methods.available; SCM's on an SCM model of the "
          "same backbone; CNN CAM's on the CNN preset trained beside the model's architecture, if any), called as the registry "
          "calls it for the top-1 class of each image of one fixed random batch, interleaved with one another and "
          "with explain's maps of every class (M_c); ratios against explain")


def scm_twin(model: TSCAM) -> SCM:
    """An SCM model of ``model``'s architecture, untrained: SCM's map needs an SCM model, and what it costs
    depends on the shapes, which the twin shares, not on the weights."""
    info = dataclasses.replace(model.info, family="scm", scm=CalibrationSettings().to_dict())
    return build_model(info).to(next(model.parameters()).device).eval()


#: The CNN preset whose checkpoint the methods table sets beside a TS-CAM architecture (its CNN CAM row).
CNN_BESIDE = {PRESETS["fashion"]["arch"]: "fashion-cnn"}


def cnn_twin(model: TSCAM) -> CNNCAM | None:
    """The CNN trained beside ``model``'s architecture (``CNN_BESIDE``), untrained, or None where there is
    none: CNN CAM's row in the methods table is that CNN's, so its cost is measured on that shape."""
    preset = CNN_BESIDE.get(model.info.arch)
    if preset is None:
        return None
    config = preset_config(preset)
    info = ModelInfo(config.arch, model.info.num_classes, timm_kwargs=config.timm_kwargs(), family="cnn_cam")
    return build_model(info).to(next(model.parameters()).device).eval()


def method_costs(model: TSCAM, label: str, batch: int, size: tuple[int, int], budget: measure.Budget) -> list[MethodCost]:
    """Each method's time per image and peak memory at ``batch``, beside explain's, from one interleaved run:
    every method that fits the model, SCM's on its twin (``scm_twin``) where the model is not SCM's, and
    CNN CAM's on ``cnn_twin``'s CNN where there is one; each cost names the architecture it ran on."""
    images = measure.random_images(batch, size, budget.device)
    with torch.no_grad():
        classes = model(images).argmax(dim=1, keepdim=True)
    subjects = {method.name: (method, model) for method in methods.available(model)}
    if "scm" not in subjects:
        subjects["scm"] = (methods.get("scm"), scm_twin(model))
    cnn = None if "cam" in subjects else cnn_twin(model)
    if cnn is not None:
        subjects["cam"] = (methods.get("cam"), cnn)
    candidates = {"explain": lambda: explain_all_classes(model, images)}
    candidates |= {name: (lambda method=method, on=on: method(on, images, classes)) for name, (method, on) in subjects.items()}
    timings = measure.time_interleaved(candidates, budget.repeats, budget.warmup, budget.device)
    memory = {name: measure.peak_memory(call, budget.device) for name, call in candidates.items()}
    return [MethodCost(label, on.info.arch, tuple(size), on.info.num_classes, batch, name,
                       1e3 * timings.median(name) / batch, memory[name],
                       timings.ratio(name, "explain"), memory[name] / memory["explain"])
            for name, (_, on) in subjects.items()]


def rows(costs: list[MethodCost]) -> list[Row]:
    """The costs as benchmark rows (benchmarks/run.py's section 7): each method's time and memory over explain's."""
    out = []
    for cost in costs:
        setting = f"{cost.method}, {cost.input_size[0]}x{cost.input_size[1]} px, 1 class per image"
        out += [Row(7, cost.subject, cost.batch, setting, "method / explain (all classes) time", cost.time_vs_explain,
                    detail=f"{measure.milliseconds(cost.ms_per_image / 1e3)} per image"),
                Row(7, cost.subject, cost.batch, setting, "method / explain (all classes) peak memory",
                    cost.memory_vs_explain, detail=measure.mebibytes(cost.peak_memory_bytes))]
    return out


def write_json(path: Path, costs: list[MethodCost], command: str, device: torch.device) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"command": command, "machine": measure.machine_description(device), "timing": measure.TIMING_METHOD,
            "peak memory": measure.memory_method(device), "method": METHOD, "costs": [cost.to_dict() for cost in costs]}
    path.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> list[MethodCost]:
    # run.py imports this module for its section 7: its subjects and budgets are imported here, when run alone.
    from benchmarks.run import BATCHES, Plan, default_subjects

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (benchmarks/run.py's --quick budgets)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's choice), as run.py")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "tscam_fashion.safetensors",
                        help="the shipped model to benchmark")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where the costs go as JSON")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    plan = Plan.create(device, args.quick)
    subjects, notes = default_subjects(device, args.checkpoint)
    costs = [cost for subject in subjects for batch in BATCHES
             for cost in method_costs(subject.model, subject.label, batch, subject.input_size, plan.for_batch(batch))]
    command = "python benchmarks/methods.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    write_json(args.json, costs, command.strip(), device)
    print(markdown_table(rows(costs)))
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {args.json}")
    return costs


if __name__ == "__main__":
    main()
