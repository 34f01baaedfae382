"""Damaged datasets through ``python -m tscam_core.evaluate`` and damaged results folders through the
dashboard's run loader; write both hostile-input tables to docs/reliability.md.

    python scripts/hostile_entry_points.py [--output docs/reliability.md]

Datasets: the tiny CUB-layout dataset of ``tscam_core.testing.tiny_training`` (generated Fashion-MNIST
scenes), damaged one way per case, each evaluated by the command line in a process of its own, strict
and with ``--on-error skip``, with a time limit (a run past it is a hang) and its own resident peak
(``wait4``). Results folders: one real evaluation's folder, damaged one way per case, read by
``load_results``, its per-image table and every thumbnail (``dashboard_data.read_thumbnail``), as the
dashboard's pages do. An answer is "results" (exit 0), "error" (one ``error:`` line, no traceback) or
"crash" (anything else).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tscam_core import ModelInfo, Preprocess, build_model, save_checkpoint
from tscam_core.dashboard_data import read_thumbnail, thumbnail_file
from tscam_core.errors import ResultsError
from tscam_core.results import load_results
from tscam_core.testing.bad_files import BadFile, Expectation, Outcome, png_bomb, probe
from tscam_core.testing.report import replace_section
from tscam_core.testing.tiny_training import make_dataset

ROOT = Path(__file__).resolve().parents[1]
#: A run of the tiny dataset takes seconds; one still going after this is a hang.
HANG_S = 120


def checkpoint(folder: Path, num_classes: int) -> Path:
    torch.manual_seed(0)
    info = ModelInfo(arch="vit_tiny_patch16_224", num_classes=num_classes,
                     timm_kwargs={"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 3},
                     preprocess=Preprocess((32, 32), (32, 32)).to_config())
    return save_checkpoint(build_model(info), info, folder / f"tiny{num_classes}.safetensors")


def first_test_image(root: Path) -> Path:
    split = dict(line.split() for line in (root / "train_test_split.txt").read_text().splitlines())
    number = next(n for n, is_train in split.items() if is_train == "0")
    images = dict(line.split(maxsplit=1) for line in (root / "images.txt").read_text().splitlines())
    return root / "images" / images[number]


def append(root: Path, name: str, text: str) -> None:
    with open(root / name, "a") as file:
        file.write(text)


def relabel(root: Path, image_number: str, label: str) -> None:
    """Give one image of image_class_labels.txt another class label, in place."""
    path = root / "image_class_labels.txt"
    lines = [f"{number} {label}" if number == image_number else f"{number} {old}"
             for number, old in (line.split() for line in path.read_text().splitlines())]
    path.write_text("\n".join(lines) + "\n")


def cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


#: Each damaged dataset: (name, what is wrong, how to damage a copy of the tiny dataset).
DATASETS: list[tuple[str, str, Callable[[Path], None]]] = [
    ("good", "the untouched dataset", lambda root: None),
    ("bad_box_line", "a bounding_boxes.txt line 'oops'", lambda root: append(root, "bounding_boxes.txt", "1 oops\n")),
    ("bad_label", "image 1's class label 999", lambda root: relabel(root, "1", "999")),
    ("truncated_image", "a test image cut in half", lambda root: cut(first_test_image(root))),
    ("text_image", "a test image that is text", lambda root: first_test_image(root).write_text("not an image\n")),
    ("bomb_image", "a test image claiming 2.5 gigapixels", lambda root: first_test_image(root).write_bytes(
        png_bomb(50_000, 50_000))),
    ("missing_image", "a test image deleted", lambda root: first_test_image(root).unlink()),
    ("escaping_path", "images.txt naming ../../etc/passwd", lambda root: (root / "images.txt").write_text(
        (root / "images.txt").read_text().replace(f" {first_test_image(root).relative_to(root / 'images')}",
                                                  " ../../../../etc/passwd", 1))),
    ("no_classes_file", "classes.txt deleted", lambda root: (root / "classes.txt").unlink()),
    ("empty_images_list", "images.txt empty", lambda root: (root / "images.txt").write_text("")),
    ("wrong_class_count", "a 5-class checkpoint on this 10-class dataset", lambda root: None),
]


@dataclass(frozen=True)
class Answer:
    result: str  # "results", "error", "crash" or "hang"
    detail: str
    seconds: float
    peak_mib: float


def evaluate_cli(args: list[str]) -> Answer:
    """``python -m tscam_core.evaluate ARGS`` in a process of its own, classified, with its own resident peak."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    # stderr to a file, not a pipe: the progress bar of a slow run would fill a pipe nobody reads
    # until the end, and the child would block on it: a hang of the probe's own making.
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen([sys.executable, "-m", "tscam_core.evaluate", *args], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=log, text=True)
    deadline, hung = time.monotonic() + HANG_S, False
    while True:  # wait4, not poll: poll would reap the child and lose its resource usage
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            hung = True
            break
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    log.seek(0)
    err = log.read()
    log.close()
    seconds = time.perf_counter() - started
    peak = usage.ru_maxrss / 1024
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    if hung:
        return Answer("hang", f"no answer in {HANG_S} s", seconds, peak)
    if process.returncode == 0:
        return Answer("results", "", seconds, peak)
    if len(errors) == 1 and "Traceback" not in err:
        return Answer("error", errors[0].removeprefix("error: "), seconds, peak)
    return Answer("crash", err.strip().splitlines()[-1] if err.strip() else f"exit {process.returncode}", seconds,
                  peak)


def probe_datasets(folder: Path) -> list[tuple[str, str, Answer, Answer]]:
    clean = make_dataset(folder / "clean")
    checkpoints = {10: checkpoint(folder, 10), 5: checkpoint(folder, 5)}
    rows = []
    for name, why, damage in DATASETS:
        root = folder / name
        shutil.copytree(clean, root)
        damage(root)
        weights = checkpoints[5 if name == "wrong_class_count" else 10]
        answers = [evaluate_cli(["--checkpoint", str(weights), "--dataset", str(root), "--kind", "cub",
                                 "--out", str(folder / "out" / f"{name}-{mode}"), "--workers", "0", "--threads", "1",
                                 "--device", "cpu", "--cam-curve-interval", "0.1", "--thumbnails", "2",
                                 *(["--on-error", "skip"] if mode == "skip" else [])])
                   for mode in ("strict", "skip")]
        rows.append((name, why, *answers))
        print(f"evaluate {name:20s} strict {answers[0].result:7s} skip {answers[1].result:7s} "
              f"{answers[0].detail[:60]}")
    return rows


def rewrite_summary(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        summary = json.loads((folder / "summary.json").read_text())
        change(summary)
        (folder / "summary.json").write_text(json.dumps(summary))
    return damage


def first_thumbnail(folder: Path) -> Path:
    return sorted((folder / "thumbnails").iterdir())[0]


#: Each damaged results folder: (name, what is wrong, how to damage a copy of a real one).
FOLDERS: list[tuple[str, str, Callable[[Path], None]]] = [
    ("good", "the untouched folder", lambda folder: None),
    ("no_summary", "summary.json deleted", lambda folder: (folder / "summary.json").unlink()),
    ("summary_not_json", "summary.json cut in half", lambda folder: cut(folder / "summary.json")),
    ("summary_a_list", "summary.json a JSON list", lambda folder: (folder / "summary.json").write_text("[]")),
    ("metric_text", "a metric as a string", rewrite_summary(lambda s: s["metrics"].update(top1_loc="high"))),
    ("threshold_text", "the threshold as a string",
     rewrite_summary(lambda s: s["settings"].update(cam_threshold="0.1"))),
    ("dataset_text", "dataset as a string", rewrite_summary(lambda s: s.update(dataset="cub"))),
    ("class_names_number", "checkpoint.class_names a number",
     rewrite_summary(lambda s: s["checkpoint"].update(class_names=7))),
    ("version_99", "format_version 99", rewrite_summary(lambda s: s.update(format_version=99))),
    ("nested_json", "summary.json nested 100,000 deep",
     lambda folder: (folder / "summary.json").write_text("[" * 100_000 + "]" * 100_000)),
    ("no_table", "per_image.parquet deleted", lambda folder: (folder / "per_image.parquet").unlink()),
    ("table_cut", "per_image.parquet cut in half", lambda folder: cut(folder / "per_image.parquet")),
    ("thumbnail_cut", "a thumbnail cut in half", lambda folder: cut(first_thumbnail(folder))),
    ("thumbnail_bomb", "a thumbnail claiming 2.5 gigapixels",
     lambda folder: first_thumbnail(folder).write_bytes(png_bomb(50_000, 50_000))),
]


def open_run(folder: Path) -> tuple[str, str]:
    """What the dashboard's pages read of a run: the summary, the per-image table, every thumbnail;
    "results" with the damaged thumbnails' placeholder reasons, or a ResultsError (raised)."""
    results = load_results(folder)
    rows = results.per_image
    paths = [thumbnail_file(folder, name) for name in rows.get("thumbnail", [])]
    damaged = [reason for _, reason in (read_thumbnail(path) for path in paths if path is not None) if reason]
    return "results", "; ".join(damaged) or f"{len(rows)} images, every thumbnail readable"


def probe_folders(folder: Path) -> list[tuple[str, str, Outcome]]:
    dataset = make_dataset(folder / "data")
    good = folder / "good-run"
    answer = evaluate_cli(["--checkpoint", str(checkpoint(folder, 10)), "--dataset", str(dataset), "--kind", "cub",
                           "--out", str(good), "--workers", "0", "--threads", "1", "--device", "cpu",
                           "--cam-curve-interval", "0.1", "--thumbnails", "4"])
    if answer.result != "results":
        raise RuntimeError(f"the evaluation that makes the results folder failed: {answer.detail}")
    rows = []
    for name, why, damage in FOLDERS:
        copy = folder / "runs" / name
        shutil.copytree(good, copy)
        damage(copy)
        case = BadFile(name, b"", Expectation("any"))
        outcome = probe(case, lambda _, copy=copy: copy, (ResultsError,), lambda _, path: open_run(path))
        outcome.detail = outcome.detail.replace(f"{folder}/", "")
        rows.append((name, why, outcome))
        print(f"dashboard {name:20s} {outcome.result:7s} {outcome.detail[:70]}")
    return rows


def versions() -> str:
    return f"Python {platform.python_version()}, torch {torch.__version__}"


def evaluate_markdown(rows: list[tuple[str, str, Answer, Answer]]) -> str:
    answers = [a for _, _, *both in rows for a in both]
    count = {kind: sum(a.result == kind for a in answers) for kind in ("results", "error", "crash", "hang")}
    lines = ["## Hostile datasets: evaluate", "",
             f"Written by `python scripts/hostile_entry_points.py` ({versions()}). The tiny CUB-layout dataset of "
             "`tscam_core/testing/tiny_training.py`, damaged one way per row, through `python -m "
             "tscam_core.evaluate` in a process of its own, strict and with `--on-error skip`; an error is one "
             f"`error:` line and no traceback; a run still going after {HANG_S} s is a hang.", "",
             f"- {len(answers)} runs of {len(rows)} datasets: {count['results']} results, {count['error']} clear "
             f"errors, **{count['crash']} crashes**, **{count['hang']} hangs**; largest resident peak "
             f"{max(a.peak_mib for a in answers):.0f} MiB (a whole process: Python, torch and the model); "
             f"slowest {max(a.seconds for a in answers):.1f} s.", "",
             "| dataset | damage | strict | --on-error skip | peak (MiB, strict / skip) |",
             "|---|---|---|---|---:|"]
    for name, why, strict, skip in rows:
        lines.append(f"| {name} | {why} | {strict.result} | {skip.result} | "
                     f"{strict.peak_mib:.0f} / {skip.peak_mib:.0f} |")
    lines += ["", "Error texts (strict, then skip where it differs; the temporary folder left out):", ""]
    for name, _, strict, skip in rows:
        for mode, answer in (("strict", strict), ("skip", skip)):
            if answer.result != "results" and (mode == "strict" or answer.detail != strict.detail):
                lines.append(f"- {name} ({mode}): {answer.detail}")
    return "\n".join(lines)


def dashboard_markdown(rows: list[tuple[str, str, Outcome]]) -> str:
    outcomes = [o for _, _, o in rows]
    count = {kind: sum(o.result == kind for o in outcomes) for kind in ("results", "error", "crash")}
    lines = ["## Hostile results folders: dashboard", "",
             f"Written by `python scripts/hostile_entry_points.py` ({versions()}). One real evaluation's results "
             "folder, damaged one way per row, read as the dashboard's pages read a run: `load_results`, the "
             "per-image table, every thumbnail through `dashboard_data.read_thumbnail` (a damaged one becomes "
             "a placeholder with its reason).", "",
             f"- {len(rows)} folders: {count['results']} shown, {count['error']} clear errors "
             f"(`ResultsError`), **{count['crash']} crashes**, **0 hangs** (each read returned); slowest "
             f"{max(o.seconds for o in outcomes) * 1000:.0f} ms; largest resident-peak growth "
             f"{max(o.rss_growth_bytes for o in outcomes) / 2**20:.1f} MiB.", "",
             "| folder | damage | dashboard | what it says | time (ms) |", "|---|---|---|---|---:|"]
    for name, why, o in rows:
        lines.append(f"| {name} | {why} | {o.result} | {o.detail} | {o.seconds * 1000:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="tscam-hostile-") as folder:
        datasets = probe_datasets(Path(folder) / "datasets")
        datasets = [(n, w, *(Answer(a.result, a.detail.replace(f"{folder}/datasets/", ""), a.seconds, a.peak_mib)
                             for a in both)) for n, w, *both in datasets]
        folders = probe_folders(Path(folder) / "folders")
    replace_section(args.output, "evaluate", evaluate_markdown(datasets), title="Reliability")
    replace_section(args.output, "dashboard", dashboard_markdown(folders), title="Reliability")
    print(f"wrote the evaluate and dashboard sections of {args.output}")
    crashes = [a for _, _, *both in datasets for a in both if a.result in ("crash", "hang")]
    crashes += [o for _, _, o in folders if o.result == "crash"]
    return 1 if crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
