"""The results the dashboard opens on: the shipped checkpoint on the embedded benchmark's test split.

Made once, on first start (or at image build time: ``python -m dashboard.shipped``), by the same
generator and evaluation a user would run by hand.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

from dashboard import runs
from dashboard.runs import ROOT
from tscam_core.errors import TSCAMError

CHECKPOINT = ROOT / "checkpoints" / "tscam_fashion.safetensors"
BENCHMARK = ROOT / "data" / "fashion-cluttered-test"


def make(progress: Callable[[str], None] = print) -> Path:
    """Render the benchmark's test split if absent, evaluate the checkpoint on it, write the shipped run."""
    from tscam_core.datasets import fashion, open_dataset
    from tscam_core.evaluate import EvalSettings, evaluate
    from tscam_core.loading import load_model
    from tscam_core.recipes import TrainConfig
    from tscam_core.training import benchmark_config

    checkpoint, benchmark, out = CHECKPOINT, BENCHMARK, runs.SHIPPED_RUN
    if not checkpoint.is_file():
        raise FileNotFoundError(f"the shipped checkpoint {checkpoint} is missing (train it: "
                                "python train/run.py --preset fashion)")
    model = load_model(checkpoint)
    # The test split the checkpoint was trained and scored for, from the recipe in its metadata.
    config = dataclasses.replace(benchmark_config(TrainConfig.from_recipe(model.info.recipe)), train=0)
    if not (benchmark / "images.txt").is_file() or fashion.differences(benchmark, config):
        progress(f"Rendering the {config.test:,} test images of Cluttered Fashion-MNIST into {benchmark}…")
        fashion.generate(benchmark, config, overwrite=True, progress=False)
    progress(f"Evaluating {checkpoint.name} on them (a few minutes on a CPU)…")
    # no loader processes: this may run inside the Streamlit server, whose threads fork badly
    evaluate(model, open_dataset(benchmark, "test", "cub"), out,
             EvalSettings(loader_workers=0, cam_threshold=model.info.validated_threshold()), name=out.name,
             progress=False, dataset_kind="cub", overwrite=True)  # this folder is the app's own
    progress(f"Wrote {out}.")
    return out


def is_current() -> bool:
    """Whether the shipped run exists, in this version's results format, and was made from the shipped
    checkpoint as it is now (a checkpoint replaced since, say by a new training run, makes it stale)."""
    from tscam_core.evaluate import file_sha256
    from tscam_core.results import FORMAT_VERSION

    try:
        summary = json.loads((runs.SHIPPED_RUN / "summary.json").read_text())
        return (summary["format_version"] == FORMAT_VERSION
                and summary["checkpoint"]["sha256"] == file_sha256(CHECKPOINT))
    except (OSError, ValueError, KeyError, TypeError):
        return False


#: What a visitor runs in a terminal to make the shipped results, and see the same error if it fails.
MAKE_COMMAND = "python -m dashboard.shipped"


def make_with_progress() -> bool:
    """``make`` inside a Streamlit status box; a failure is shown below it, with its reason and the
    command that makes the results by hand, never raised. True when made."""
    import streamlit as st

    failure: Exception | None = None
    with st.status("Making the shipped results (first start only)…", expanded=True) as status:
        try:
            make(st.write)
        except Exception as error:  # any failure must end as a message in the page, the app still usable
            failure = error
            status.update(label="The shipped results could not be made", state="error", expanded=False)
        else:
            status.update(label="Shipped results ready", state="complete", expanded=False)
    if failure is not None:
        st.error(f"The shipped results could not be made: {failure}")
        st.markdown("Fix that, then make them from a terminal (it prints the same reason if it fails again) "
                    "and reload this page, or pick a results folder in the sidebar:")
        st.code(MAKE_COMMAND, language="bash")
    return failure is None


def main() -> int:
    try:
        make()
    except (TSCAMError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
