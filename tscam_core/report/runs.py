"""One ``python -m tscam_core.evaluate`` command of the results page: built, run, or reused from its folder.

Each run is a subprocess of the command the page shows (less the ``--overwrite`` that lets it
replace an older folder), so what the page prints is what ran. With ``reuse`` a folder is kept
when it was made from the same checkpoint file (same SHA-256) on the same images (dataset, split,
limit) with the same protocol (CAM threshold, threshold step, box convention) and map or method.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import TSCAMError
from ..explanation import MapSpec
from ..files import file_sha256
from ..metrics import CAM_CURVE_INTERVAL
from ..overlaps import DEFAULT_BOX_CONVENTION
from ..results import Results, load_results


def map_flags(spec: MapSpec) -> list[str]:
    """The evaluation command's options that select ``spec``."""
    layers = spec.blocks if isinstance(spec.blocks, str) else ",".join(map(str, spec.blocks)) + ","
    return (["--variant", spec.variant] + ([] if spec.blocks == "all" else ["--layers", layers])
            + (["--signed-class-maps"] if spec.signed else []))


@dataclass(frozen=True)
class EvalRun:
    """What one evaluation scores (checkpoint, images, map or registry method), how, and where it writes."""

    checkpoint: str
    dataset: str
    split: str
    out: Path
    threshold: float
    spec: MapSpec | None = None  # a map of the model's explanation (--variant, --layers, --signed-class-maps)
    method: str | None = None  # a method of tscam_core.methods (--method)
    cam_curve_interval: float = CAM_CURVE_INTERVAL
    box_convention: str = DEFAULT_BOX_CONVENTION
    batch_size: int = 64
    threads: int = 2
    device: str = "cpu"
    limit: int | None = None

    def command(self) -> list[str]:
        command = ["python", "-m", "tscam_core.evaluate", "--checkpoint", str(self.checkpoint), "--dataset",
                   str(self.dataset), "--split", self.split, "--out", str(self.out),
                   # the protocol's options spelled out, so that the document does not hang on defaults
                   "--cam-curve-interval", str(self.cam_curve_interval), "--box-convention", self.box_convention,
                   "--threshold", str(self.threshold),
                   "--batch-size", str(self.batch_size), "--threads", str(self.threads), "--device", self.device]
        if self.spec is not None:
            command += map_flags(self.spec)
        if self.method is not None:
            command += ["--method", self.method]
        if self.limit:
            command += ["--limit", str(self.limit)]
        return command

    def made(self, results: Results) -> bool:
        """Whether ``results`` is what this command writes: same checkpoint file, images, protocol and map."""
        settings, dataset = results.summary["settings"], results.summary["dataset"]
        return (results.summary["checkpoint"].get("sha256") == file_sha256(Path(self.checkpoint))
                and settings["cam_threshold"] == self.threshold
                and settings.get("cam_curve_interval") == self.cam_curve_interval
                and settings.get("box_convention") == self.box_convention
                and (self.spec is None or MapSpec.from_record(settings) == self.spec)
                and self._same_method(settings)
                and Path(dataset["path"]) == Path(self.dataset).resolve() and dataset["split"] == self.split
                and settings.get("limit") == (self.limit or None))  # the images the command evaluates


    def _same_method(self, settings: dict) -> bool:
        """A run of a --method records it; one of a map may record that map's own method (its MapSpec key).
        summary.json holds the method as {name, label, cost}."""
        recorded = settings.get("method")
        recorded = recorded.get("name") if isinstance(recorded, dict) else recorded
        if self.method is not None:
            return recorded == self.method
        return recorded is None or recorded == MapSpec.from_record(settings).key


def run(plan: EvalRun, reuse: bool = False, cwd: Path | None = None) -> tuple[Results, list[str]]:
    """The run's results and the command that made them: its folder when ``reuse`` finds it made by the same
    command, else a fresh evaluation over what the folder holds (SystemExit naming the command if it fails)."""
    command = plan.command()
    if reuse and (plan.out / "summary.json").is_file():
        try:
            existing = load_results(plan.out)
            if plan.made(existing):
                return existing, command
        except TSCAMError:
            pass
    completed = subprocess.run([sys.executable, *command[1:], "--overwrite"], cwd=cwd)
    if completed.returncode != 0:
        raise SystemExit(f"the evaluation failed (exit {completed.returncode}): {shlex.join(command)}")
    return load_results(plan.out), command
