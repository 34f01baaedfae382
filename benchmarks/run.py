"""One command for every speed and memory anchor of the project; writes docs/performance.md.

    python benchmarks/run.py [--quick] [--device cuda]

Measures, for deit_small_patch16_224 (random weights, 200 classes as CUB) and the shipped
checkpoint, at batch sizes 1 and 16, each comparison side by side in one run:
1. explain vs logits-only forward (time, peak memory);  2. explain vs the official explicit
approach at the model's input size and at 384/224 of it;  3. explain (all classes) vs
pytorch-grad-cam GradCAM (top-1, top-5);  4. a TS-CAM training step vs a plain timm
classifier step;  5. full evaluation vs forward-only images/s;  6. the demo's control-update
and upload latency;  7. every localization method of tscam_core.methods vs explain
(time per image, peak memory; benchmarks/methods.py). Prints one table, writes it as JSON
with the machine's description and as docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import demo_latency, evaluation_speed, explain_cost, gradcam_compare, training_step
from benchmarks import methods as method_costs
from benchmarks.measure import TIMING_METHOD, Budget, machine_description, memory_method
from benchmarks.report import Goal, Report, Row, Skipped, markdown_page, markdown_table
from tscam_core import TSCAM, ModelInfo, build_model, load_model
from tscam_core.recipes import FASHION_DATA

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "tscam_fashion.safetensors"
DEFAULT_DOC = ROOT / "docs" / "performance.md"
DEFAULT_JSON = ROOT / "benchmarks" / "results.json"
BATCHES = (1, 16)
#: Section 2 also runs at this multiple of the model's input side (224 -> 384 for DeiT).
LARGE_FACTOR = 384 / 224
GAP_GROWS_GOAL = Goal(">", 1.0)
SECTION_METHODS = {
    "sections 1-2": explain_cost.METHOD, "section 3": gradcam_compare.METHOD, "section 4": training_step.METHOD,
    "section 5": evaluation_speed.METHOD, "section 6": demo_latency.METHOD, "section 7": method_costs.METHOD,
}


@dataclass(frozen=True)
class Plan:
    """How much to measure: ``precise`` for batch 1 and for section 1's tight goals, ``heavy`` for
    the expensive batch-16 comparisons (384 px explicit, GradCAM top-5, training, evaluation).

    ``--quick`` is a smoke run of every row in a few minutes on 2 busy CPU cores: two timed
    rounds where goals are tight, and one round with no warm-up for the heavy comparisons,
    whose calls last seconds (a warm-up round would double the run for little precision).
    """

    precise: Budget
    heavy: Budget
    eval_images: int
    eval_seconds: float = 0.0  # section 5 runs at least this long a forward (see evaluation_speed)

    @classmethod
    def create(cls, device: torch.device, quick: bool) -> Plan:
        if quick:
            return cls(Budget(device, 2, 1), Budget(device, 1, 0), eval_images=32)
        return cls(Budget(device, 9, 2), Budget(device, 4, 1), eval_images=128, eval_seconds=2.0)

    def for_batch(self, batch: int) -> Budget:
        return self.precise if batch == 1 else self.heavy


@dataclass
class Subject:
    """A model to benchmark, with ``model.info`` describing it (architecture, classes, input size)."""

    label: str
    model: TSCAM
    dataset: Path | None = None  # its own test split for section 5, when there is one

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.model.info.transform.input_size)

    @property
    def large_size(self) -> tuple[int, int]:
        patch = self.model.patch_size
        return tuple(max(patch[i], round(self.input_size[i] * LARGE_FACTOR / patch[i]) * patch[i]) for i in (0, 1))


def default_subjects(device: torch.device, checkpoint: Path = SHIPPED) -> tuple[list[Subject], list[str]]:
    """deit_small with random weights, and the shipped checkpoint when it exists."""
    torch.manual_seed(0)
    subjects = [Subject("deit_small_patch16_224", build_model(ModelInfo("deit_small_patch16_224", 200)))]
    notes = ["deit_small_patch16_224 has random weights (pretrained=False) and 200 classes (CUB): cost does not "
             "depend on the weights' values."]
    if checkpoint.is_file():
        subjects.append(Subject(f"shipped ({checkpoint.name})", load_model(checkpoint), ROOT / FASHION_DATA))
    else:
        notes.append(f"the shipped checkpoint {checkpoint} is absent: its rows are skipped.")
    for subject in subjects:
        subject.model.to(device).eval()
    return subjects, notes


def run_benchmarks(subjects: Sequence[Subject], batches: Sequence[int], plan: Plan, workdir: Path) -> tuple[list[Row], list[str]]:
    """Every section for every subject and batch size; a section that cannot run becomes a note."""
    rows: list[Row] = []
    notes: list[str] = []

    def attempt(section: int, label: str, measure: Callable[..., list[Row]], *args, **kwargs) -> list[Row]:
        try:
            found = measure(*args, **kwargs)
        except Skipped as reason:
            notes.append(f"section {section} skipped for {label}: {reason}")
            return []
        rows.extend(found)
        return found

    for subject in subjects:
        model, label, size, large = subject.model, subject.label, subject.input_size, subject.large_size
        for batch in batches:
            budget = plan.for_batch(batch)
            native = attempt(1, label, explain_cost.explain_cost, model, label, batch, size, plan.precise)
            bigger = attempt(2, label, explain_cost.explain_cost, model, label, batch, large, budget,
                             with_logits=False)
            if native and bigger:
                rows.append(_gap_row(label, batch, size, large, native, bigger))
            attempt(3, label, gradcam_compare.gradcam_compare, model, label, batch, size, budget)
            attempt(4, label, training_step.training_step, model, label, batch, size, budget)
            attempt(7, label, lambda *shape: method_costs.rows(method_costs.method_costs(*shape)), model, label, batch,
                    size, budget)
        attempt(5, label, evaluation_speed.evaluation_speed, model, label, max(batches), plan.eval_images,
                plan.heavy, workdir, subject.dataset, plan.eval_seconds)
        attempt(6, label, demo_latency.demo_latency, model, label, plan.precise)
    rows.sort(key=lambda row: row.section)
    return rows, notes


def _gap_row(label: str, batch: int, size: tuple[int, int], large: tuple[int, int],
             native: list[Row], bigger: list[Row]) -> Row:
    """Section 2's second goal: the explicit approach falls further behind as tokens grow."""
    def speedup(rows: list[Row]) -> float:
        return next(row.value for row in rows if row.metric == "explicit / explain time")

    small, large_speedup = speedup(native), speedup(bigger)
    return Row(2, label, batch, f"{size[0]} -> {large[0]} px", "explicit/explain time: larger input / smaller",
               large_speedup / small, goal=GAP_GROWS_GOAL,
               detail=f"{small:.2f}x at {size[0]} px, {large_speedup:.2f}x at {large[0]} px")


def benchmark(subjects: Sequence[Subject], plan: Plan, command: str, notes: Sequence[str] = ()) -> Report:
    """The whole run: every section for every subject at batch sizes 1 and 16, as one report."""
    device = plan.precise.device
    started = time.perf_counter()
    report = Report(command=command, machine=machine_description(device),
                    methods={"timing": TIMING_METHOD, "peak memory": memory_method(device), **SECTION_METHODS})
    with tempfile.TemporaryDirectory(prefix="tscam-bench-") as workdir:
        report.rows, found = run_benchmarks(subjects, BATCHES, plan, Path(workdir))
    report.notes = list(dict.fromkeys([*notes, *found]))
    report.wall_time_s = time.perf_counter() - started
    report.machine["load_average_1min_end"] = machine_description(device)["load_average_1min"]
    return report


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a few minutes on 2 CPU cores)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 (default) keeps ratios steady when other processes share the "
                             "cores (with 2 threads on 2 busy cores every parallel region waits for a descheduled "
                             "thread); 0 = torch's choice")
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED, help="the shipped model to benchmark")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where the table goes as JSON")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC, help="where the Markdown page goes")
    parser.add_argument("--render", type=Path, default=None,
                        help="measure nothing: rewrite --doc from this results JSON (after editing the page's text)")
    args = parser.parse_args(argv)

    if args.render is not None:
        report = Report.from_dict(json.loads(args.render.read_text()))
        args.doc.write_text(markdown_page(report))
        return report
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    command = "python benchmarks/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    subjects, notes = default_subjects(device, args.checkpoint)
    report = benchmark(subjects, Plan.create(device, args.quick), command.strip(), notes)
    publish(report, args.json, args.doc)
    return report


def publish(report: Report, json_path: Path, doc_path: Path) -> None:
    """Print the table and write it as JSON and as the docs page."""
    print(markdown_table(report.rows))
    for note in report.notes:
        print(f"note: {note}")
    report.write_json(json_path)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    doc_path.write_text(markdown_page(report))
    print(f"wrote {json_path} and {doc_path} in {report.wall_time_s:.0f} s")


if __name__ == "__main__":
    main()
