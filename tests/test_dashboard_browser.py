"""The dashboard in a real browser: `streamlit run` on a free local port, Debian's headless Chromium.

Screenshots of the overview and of the failure browser with an image's detail open are saved
under test-artifacts/ (git-ignored) for a human to look at; the assertions check what the
browser rendered: the metric values, six drawn charts, the thumbnails and the boxes' colours.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_dashboard import make_runs

from tscam_core.overlay import GT_COLOR

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT_MS = 120_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folders = make_runs(tmp_path_factory.mktemp("browser"))
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
               "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--", "--results", str(folders["a"]), str(folders["b"])]
    log = tmp_path_factory.mktemp("log") / "streamlit.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{log.read_text()}")
            time.sleep(0.5)
        yield url, folders
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def page(server):
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser.new_page(viewport={"width": 1400, "height": 2400})
        browser.close()


def screenshot(page, name: str) -> np.ndarray:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_overview_renders_metrics_and_charts(server, page):
    url, folders = server
    page.goto(url)
    page.wait_for_function("document.querySelectorAll('[data-testid=stPlotlyChart] .main-svg').length >= 6",
                           timeout=TIMEOUT_MS)
    page.wait_for_timeout(1000)
    pixels = screenshot(page, "dashboard_overview.png")
    text = page.inner_text("body")
    assert "Overview" in text and "Localization vs IoU threshold (Fig. 7)" in text
    assert pixels.std() > 10  # a rendered page, not the blank loading skeleton
    # the grid draws on a canvas; its accessible table holds the same cells, row by row
    cells = page.locator("[data-testid=stDataFrame]").first.locator("td").all_text_contents()
    row = cells.index("Top-1 Loc")
    for offset, run in enumerate("ab", start=1):
        top1_loc = 100 * pd.read_parquet(folders[run] / "per_image.parquet")["top1_loc"].mean()
        assert float(cells[row + offset]) == pytest.approx(top1_loc, abs=0.01)


def test_failure_browser_shows_thumbnails_and_detail(server, page):
    url, folders = server
    page.goto(f"{url}/failures")
    page.wait_for_selector("[data-testid=stImage] img", timeout=TIMEOUT_MS)
    frame = pd.read_parquet(folders["a"] / "per_image.parquet")
    failures = int((frame["error_type"] != "correct").sum())
    assert page.get_by_text(f"{failures} of 60 images match").is_visible()
    page.wait_for_function("document.querySelectorAll('[data-testid=stImage] img').length >= 12", timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Details").first.click()
    page.get_by_text("Top-5 scores").wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("Attention of each block").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(1500)
    pixels = screenshot(page, "dashboard_failures.png")
    assert page.get_by_text("CAM threshold").is_visible()
    near_gt = (np.abs(pixels - np.array(GT_COLOR)).max(axis=2) < 40).sum()
    assert near_gt > 200  # the green GT boxes of the thumbnails and of the detail view were drawn
