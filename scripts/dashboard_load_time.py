"""Load time of the dashboard on a synthetic run of 50,000 images (issue 6: stays responsive).

    python scripts/dashboard_load_time.py [--images 50000] [--output docs/dashboard.md]

Prints, and writes between the ``load-time`` markers of docs/dashboard.md, the seconds of:
reading the run cold (load_results and the filter columns), a filter change, and each page's
first (cold) and repeated (cached) script run under Streamlit's AppTest, which executes the real
app script, widgets and all, without a browser. Writing the run is printed too (not a dashboard cost).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from streamlit.testing.v1 import AppTest

from dashboard.synthetic import write_synthetic
from tscam_core.dashboard_data import ImageFilter, filter_images, prepare_images
from tscam_core.results import load_results
from tscam_core.testing.report import replace_section

ROOT = Path(__file__).resolve().parent.parent


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--output", default=str(ROOT / "docs" / "dashboard.md"),
                        help="where the table goes (between its load-time markers); '' to only print")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    steps: list[tuple[str, float]] = []

    def step(label: str, seconds: float) -> None:
        steps.append((label, seconds))
        print(f"{label}: {seconds:.3f} s")

    classes = [f"class {i}" for i in range(200)]
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "synthetic"
        seconds, _ = timed(lambda: write_synthetic(run, args.images, classes, depth=12))
        print(f"write a {args.images:,}-image run (not a dashboard cost): {seconds:.2f} s")
        seconds, results = timed(lambda: load_results(run).per_image)
        step("read cold (`load_results` + `per_image.parquet`)", seconds)
        seconds, frame = timed(lambda: prepare_images(results, classes))
        step("add the filter columns", seconds)
        seconds, _ = timed(lambda: filter_images(frame, ImageFilter(("cls", "part"), (3, 7), (0.1, 0.6))))
        step("one filter change (pandas)", seconds)

        sys.argv = ["dashboard/app.py", "--results", str(run)]
        app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300)
        for page, first in (("views/overview.py", "overview, first run (read + charts)"),
                            ("views/failures.py", "failure browser, first run (run already read)")):
            if page != "views/overview.py":
                app.switch_page(page)
            cold, _ = timed(app.run)
            warm, _ = timed(app.run)
            if app.exception:
                raise SystemExit(f"{page} failed: {app.exception[0].message}")
            step(first, cold)
            step(f"{first.split(',')[0]}, rerun (cached)", warm)
        cold, _ = timed(lambda: app.slider(key="filter_iou").set_value((0.2, 0.8)).run())
        step("failure browser, rerun after an IoU filter change", cold)
        cold, _ = timed(lambda: app.pagination(key="failures_page").select(40).run())
        step("failure browser, jump to page 40", cold)
    if args.output:
        table = "\n".join(["| step | seconds |", "|---|---|", *(f"| {label} | {seconds:.3f} |" for label, seconds in steps)])
        command = "OMP_NUM_THREADS=1 python scripts/dashboard_load_time.py" + (
            f" --images {args.images}" if args.images != parser.get_default("images") else "")
        body = (f"Written by `{command}` on {date.today().isoformat()}: "
                f"a synthetic run of {args.images:,} images (200 classes, 12 blocks); {os.cpu_count()} CPU cores, "
                f"load average {load:.1f} before the run.\n\n{table}")
        print(f"written to {replace_section(args.output, 'load-time', body)}")


if __name__ == "__main__":
    main()
