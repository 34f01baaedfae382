"""Kill a tiny real training run again and again, resume it each time, compare its final weights with an
uninterrupted run's; write the figures to docs/reliability.md.

    python scripts/kill_resume.py [--trials 3] [--output docs/reliability.md]

Each trial trains the 2-block ViT of ``tscam_core.testing.tiny_training`` (48 generated images, 6
epochs, state saved every epoch) through ``train/run.py`` and sends SIGKILL three times: at a random
moment of training, in the middle of a checkpoint write, and during the resumed process's start-up
(``tscam_core.testing.kill_resume``). After each kill the state must load; the last resume runs to
the end, and its weights must equal the uninterrupted run's bit for bit. About 1-2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from tscam_core.testing.kill_resume import MOMENTS, Kill, kill, start
from tscam_core.testing.report import replace_section
from tscam_core.testing.tiny_training import cli_args, make_dataset, tiny_config, weights
from tscam_core.training import train

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Trial:
    kills: list[Kill]
    finished: bool  # the last resume exited with 0
    equal: bool  # its weights equal the uninterrupted run's, tensor by tensor
    torn_left: bool  # a temporary file still there at the end
    seconds: float


def trial(config, reference: dict, number: int) -> Trial:
    """One run killed at each moment of MOMENTS in turn, resumed after each, then finished."""
    rng = random.Random(number)
    victim = dataclasses.replace(config, name=f"trial{number}")
    run_dir = Path(victim.output) / victim.name
    began = time.monotonic()
    kills = []
    since, process = time.time(), start(cli_args(victim))
    for moment in MOMENTS:
        kills.append(kill(process, run_dir, moment, rng, since))
        since, process = time.time(), start(["--resume", str(run_dir)])
    _, err = process.communicate(timeout=600)
    finished = process.returncode == 0
    if not finished:
        print(err[-2000:], file=sys.stderr)
    resumed = weights(run_dir / "last.safetensors") if finished else {}
    equal = finished and resumed.keys() == reference.keys() and all(
        torch.equal(reference[key], resumed[key]) for key in reference)
    return Trial(kills, finished, equal, any(run_dir.glob(".*.tmp")), time.monotonic() - began)


def markdown(trials: list[Trial], command: str) -> str:
    kills = [k for t in trials for k in t.kills]
    landed = {moment: sum(k.landed for k in kills if k.aimed == moment) for moment in MOMENTS}
    torn = sum(k.torn_write for k in kills if k.landed)
    lines = ["## Kill and resume", "",
             f"Written by `{command}` (Python {platform.python_version()}, torch {torch.__version__}). "
             "A tiny real training run (`tscam_core/testing/tiny_training.py`: 2-block ViT, 48 generated images, "
             "6 epochs, state saved every epoch) through `train/run.py`, sent SIGKILL at a random moment of "
             "training, in the middle of a checkpoint write (its temporary file seen) and during the resumed "
             "process's start-up, resumed after each kill; the final weights are compared with an "
             "uninterrupted run's, tensor by tensor.", "",
             f"- Trials: {len(trials)}; kills landed: {sum(landed.values())} of {len(kills)} "
             f"({', '.join(f'{count} {moment}' for moment, count in landed.items())}); kills that left a write "
             f"torn (its temporary file behind): {torn}.",
             f"- States (and checkpoints) that failed to load after a kill: "
             f"**{sum(not k.loadable for k in kills)}** of {len(kills)}; resumes finished: "
             f"**{sum(t.finished for t in trials)} of {len(trials)}**; final weights equal to the uninterrupted "
             f"run's: **{sum(t.equal for t in trials)} of {len(trials)}**; temporary files left at the end: "
             f"**{sum(t.torn_left for t in trials)}**.", "",
             "| trial | kills (moment: landed, state step after it) | finished | weights equal | time (s) |",
             "|---:|---|---|---|---:|"]
    for number, t in enumerate(trials, 1):
        cells = "; ".join(f"{k.aimed}: {'yes' if k.landed else 'no'}, step {k.step}"
                          + (", write torn" if k.torn_write and k.landed else "") for k in t.kills)
        lines.append(f"| {number} | {cells} | {'yes' if t.finished else 'NO'} | {'yes' if t.equal else 'NO'} | "
                     f"{t.seconds:.0f} |")
    return "\n".join(lines)


def run(trials: int, folder: Path) -> list[Trial]:
    data = make_dataset(folder / "data" / "fashion")
    config = tiny_config(data, folder / "runs", "reference", epochs=6, save_every=1)
    reference = weights(train(config) / "last.safetensors")
    return [trial(config, reference, number) for number in range(trials)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args(argv)
    if not 1 <= args.trials <= 20:
        parser.error("--trials must be within 1..20")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="tscam-kill-") as folder:
        trials = run(args.trials, Path(folder))
    command = "python scripts/kill_resume.py" + ("" if args.trials == 3 else f" --trials {args.trials}")
    text = markdown(trials, command)
    print(text)
    replace_section(args.output, "kill_resume", text, title="Reliability")
    ok = all(t.finished and t.equal and not t.torn_left and all(k.loadable for k in t.kills) for t in trials)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
