"""Load time of the dashboard on a synthetic run of 50,000 images (issue 6: stays responsive).

    python scripts/dashboard_load_time.py [--images 50000]

Prints the seconds of: writing the run (not a dashboard cost), reading it cold (load_results and
the filter columns), and each page's first (cold) and repeated (cached) script run under
Streamlit's AppTest, which executes the real app script, widgets and all, without a browser.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

from dashboard.synthetic import write_synthetic  # noqa: E402
from tscam_core.dashboard_data import ImageFilter, filter_images, prepare_images  # noqa: E402
from tscam_core.results import load_results  # noqa: E402


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000)
    args = parser.parse_args()
    classes = [f"class {i}" for i in range(200)]
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "synthetic"
        seconds, _ = timed(lambda: write_synthetic(run, args.images, classes, depth=12))
        print(f"write a {args.images:,}-image run: {seconds:.2f} s")
        seconds, results = timed(lambda: load_results(run).per_image)
        print(f"read cold (load_results + per_image.parquet): {seconds:.2f} s")
        seconds, frame = timed(lambda: prepare_images(results, classes))
        print(f"add the filter columns: {seconds:.2f} s")
        seconds, _ = timed(lambda: filter_images(frame, ImageFilter(("cls", "part"), (3, 7), (0.1, 0.6))))
        print(f"one filter change: {seconds * 1000:.1f} ms")

        sys.argv = ["dashboard/app.py", "--results", str(run)]
        app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300)
        for page in ("views/overview.py", "views/failures.py"):
            if page != "views/overview.py":
                app.switch_page(page)
            cold, _ = timed(app.run)
            warm, _ = timed(app.run)
            if app.exception:
                raise SystemExit(f"{page} failed: {app.exception[0].message}")
            print(f"{page}: first run {cold:.2f} s, rerun (cached) {warm:.2f} s ({app.title[0].value!r} shown)")
        cold, _ = timed(lambda: app.slider(key="filter_iou").set_value((0.2, 0.8)).run())
        print(f"views/failures.py: rerun after an IoU filter change {cold:.2f} s")
        cold, _ = timed(lambda: app.pagination(key="failures_page").select(40).run())
        print(f"views/failures.py: rerun to page 40 {cold:.2f} s ({app.markdown[0].value})")


if __name__ == "__main__":
    main()
