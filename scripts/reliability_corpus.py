"""Run the bad-file corpus through image loading and the explain path, and the hostile checkpoints
through load_model; write the figures to docs/reliability.md.

    python scripts/reliability_corpus.py [--output docs/reliability.md]

Each image case goes through ``tscam_core.load_image`` and ``tscam_core.explain_file`` (a tiny,
randomly initialised TS-CAM: robustness does not depend on the weights). Outcomes are
classified by ``tscam_core.testing.bad_files.probe``: "image" (the right RGB image),
"error" (a clear ``ImageError``) or "crash" (any other exception, or a wrong image). Each
checkpoint case (``tscam_core.testing.bad_checkpoints``, rewrites of that tiny model's
checkpoint) goes through ``load_model``: "model", "error" (a ``CheckpointError``) or "crash".
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from tscam_core import (
    CheckpointError,
    ModelInfo,
    Preprocess,
    build_model,
    explain_file,
    load_image,
    load_model,
)
from tscam_core.testing.bad_checkpoints import HostileCheckpoint, check_model, hostile_checkpoints, loader
from tscam_core.testing.bad_files import Outcome, bad_file_corpus, mutated_corpus, probe
from tscam_core.testing.report import replace_section

ROOT = Path(__file__).resolve().parents[1]


def tiny_model():
    torch.manual_seed(0)
    info = ModelInfo(arch="vit_tiny_patch16_224", num_classes=5,
                     timm_kwargs={"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 3},
                     preprocess=Preprocess((32, 32), (32, 32)).to_config())
    return build_model(info).eval()


def handlers() -> dict[str, Callable[[bytes], Image.Image]]:
    model = tiny_model()
    return {"load_image": load_image, "explain_file": lambda data: explain_file(model, data)[0]}


def probe_checkpoints() -> list[tuple[HostileCheckpoint, Outcome]]:
    model = tiny_model()
    with tempfile.TemporaryDirectory() as folder:
        handler = loader(Path(folder), load_model)
        probed = [(case, probe(case.as_bad_file(), handler(case), (CheckpointError,), check_model))
                  for case in hostile_checkpoints(model, model.info)]
    for _, outcome in probed:  # the file names alone: the temporary folder differs on every run
        outcome.detail = outcome.detail.replace(f"{folder}/", "")
    return probed


def checkpoint_markdown(probed: list[tuple[HostileCheckpoint, Outcome]]) -> str:
    outcomes = [outcome for _, outcome in probed]
    named = [case.names in outcome.detail for case, outcome in probed if case.names]
    slowest = max(outcomes, key=lambda o: o.seconds)
    lines = ["## Hostile checkpoints", "",
             f"Written by `python scripts/reliability_corpus.py` (Python {platform.python_version()}, "
             f"torch {torch.__version__}). A tiny TS-CAM checkpoint written by `save_checkpoint`, its metadata "
             "rewritten (`tscam_core/testing/bad_checkpoints.py`), each file through `load_model` in one process.",
             "",
             f"- `load_model`: {len(outcomes)} files tried, {sum(o.as_expected for o in outcomes)} as expected; "
             f"{sum(o.result == 'model' for o in outcomes)} loaded, {sum(o.result == 'error' for o in outcomes)} "
             f"clear errors ({sum(named)} of {len(named)} naming the field, tensor or kind of file at fault), "
             f"{sum(o.result == 'crash' for o in outcomes)} crashes; slowest {slowest.seconds * 1000:.1f} ms "
             f"({slowest.name}); largest resident-peak growth "
             f"{max(o.rss_growth_bytes for o in outcomes) / 2**20:.1f} MiB.",
             "", "| file | bytes | claims | load_model | names the fault | time (ms) |", "|---|---:|---|---|---|---:|"]
    for case, outcome in probed:
        flag = "" if outcome.as_expected else " (UNEXPECTED)"
        names = ("yes" if case.names in outcome.detail else "NO") if case.names else ""
        lines.append(f"| {case.name} | {len(case.data):,} | {case.why} | {outcome.result}{flag} | {names} | "
                     f"{outcome.seconds * 1000:.1f} |")
    lines += ["", "Error texts (the temporary folder left out):", ""]
    lines += [f"- {outcome.detail}" for _, outcome in probed if outcome.result == "error"]
    return "\n".join(lines)


def markdown(results: dict[str, list[Outcome]], mutants: list[Outcome]) -> str:
    cases = bad_file_corpus()
    lines = ["## Bad input files", "",
             f"Written by `python scripts/reliability_corpus.py` (Python {platform.python_version()}, "
             f"torch {torch.__version__}, Pillow {Image.__version__}).", ""]
    for handler, outcomes in results.items():
        expected = sum(o.as_expected for o in outcomes)
        images = sum(o.result == "image" for o in outcomes)
        errors = sum(o.result == "error" for o in outcomes)
        crashes = sum(o.result == "crash" for o in outcomes)
        slowest = max(outcomes, key=lambda o: o.seconds)
        lines.append(f"- `{handler}`: {len(outcomes)} files tried, {expected} as expected; {images} loaded, "
                     f"{errors} clear errors, {crashes} crashes; slowest {slowest.seconds * 1000:.1f} ms "
                     f"({slowest.name}); largest Python peak "
                     f"{max(o.python_peak_bytes for o in outcomes) / 2**20:.1f} MiB; largest resident-peak growth "
                     f"{max(o.rss_growth_bytes for o in outcomes) / 2**20:.1f} MiB.")
    if mutants:
        counts = {kind: sum(o.result == kind for o in mutants) for kind in ("image", "error", "crash")}
        lines.append(f"- `load_image` on {len(mutants):,} seeded random mutations of small valid files "
                     f"(`mutated_corpus`: JPEG, PNG, APNG, GIF, TIFF, BMP, WebP, ICO): {counts['image']:,} loaded, "
                     f"{counts['error']:,} clear errors, {counts['crash']} crashes; slowest "
                     f"{max(o.seconds for o in mutants) * 1000:.0f} ms.")
    lines += ["", "| file | bytes | expected | " + " | ".join(results) + " | time (ms, " + " / ".join(results) + ") |",
              "|---|---:|---|" + "---|" * len(results) + "---:|"]
    for index, case in enumerate(cases):
        outcomes = [results[handler][index] for handler in results]
        cells = [f"{o.result}{'' if o.as_expected else ' (UNEXPECTED)'}" for o in outcomes]
        times = " / ".join(f"{o.seconds * 1000:.1f}" for o in outcomes)
        why = f" ({case.expectation.why})" if case.expectation.why else ""
        lines.append(f"| {case.name} | {len(case.data):,} | {case.expectation.outcome}{why} | "
                     + " | ".join(cells) + f" | {times} |")
    errors = {o.name: o.detail for o in results["load_image"] if o.result == "error"}
    lines += ["", "Error texts (`load_image`, uploads passed as bytes):", ""]
    lines += [f"- {name}: {detail}" for name, detail in errors.items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("--mutants", type=int, default=2000, help="random mutations to push through load_image")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {name: [probe(case, handler) for case in bad_file_corpus()] for name, handler in handlers().items()}
    for name, outcomes in results.items():
        for outcome in outcomes:
            print(f"{name:13s} {outcome.name:28s} expected {outcome.expected:5s} got {outcome.result:5s} "
                  f"{outcome.seconds * 1000:8.1f} ms  {outcome.detail[:80]}")
    mutants = [probe(case, load_image) for case in mutated_corpus(args.mutants)]
    for outcome in mutants:
        if outcome.result == "crash":
            print(f"CRASH {outcome.name}: {outcome.detail}")
    replace_section(args.output, "corpus", markdown(results, mutants), title="Reliability")
    checkpoints = probe_checkpoints()
    for case, outcome in checkpoints:
        print(f"load_model    {case.name:40s} got {outcome.result:5s} {outcome.seconds * 1000:8.1f} ms  "
              f"{outcome.detail[-80:]}")
    replace_section(args.output, "checkpoints", checkpoint_markdown(checkpoints), title="Reliability")
    print(f"wrote the corpus and checkpoints sections of {args.output}")
    outcomes = [o for found in results.values() for o in found] + mutants + [o for _, o in checkpoints]
    return 0 if all(o.as_expected for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
