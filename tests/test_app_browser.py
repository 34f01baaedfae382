"""The page in headless Chromium (Debian's /usr/bin/chromium, driven by playwright; no browser download).

Uploads an example, drags the threshold slider, checks that the maps, the gallery and the
box render, picks a gradient method and computes its map, and saves screenshots under test-artifacts/.
"""

from __future__ import annotations

import io
import re
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_app_e2e import make_site

from scripts.load_test import AppProcess
from tscam_core.overlay import GT_COLOR, PRED_COLOR

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="pip install playwright (no browser download needed)"
)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install chromium"),
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    checkpoint, examples = make_site(folder, depth=6)  # a gallery of one full row
    with AppProcess(checkpoint, examples) as running:
        running.examples = examples
        yield running


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield browser.new_page(viewport={"width": 1400, "height": 1900})
        browser.close()


def shown(page, selector: str) -> np.ndarray:
    """The pixels of the image the page shows in ``selector``, fetched from its src."""
    image = page.locator(f"{selector} img").first
    image.wait_for(state="visible", timeout=TIMEOUT_MS)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=TIMEOUT_MS
    )
    with urllib.request.urlopen(image.get_attribute("src"), timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB")).astype(int)


def box_pixels(prediction: np.ndarray, coupled: np.ndarray) -> np.ndarray:
    """The pixels where the prediction differs from the bare M_c map: the drawn boxes and labels."""
    return prediction[np.abs(prediction - coupled).sum(axis=2) > 120]


def near(pixels: np.ndarray, color: tuple[int, int, int]) -> int:
    return int((np.abs(pixels - np.array(color)).sum(axis=1) < 90).sum())


def test_upload_an_example_and_move_the_threshold(server, page):
    page.goto(server.url, timeout=TIMEOUT_MS)
    page.locator("#image-input input[type=file]").set_input_files(str(server.examples / "bag.png"))

    page.locator("#layer-gallery img").nth(1).wait_for(state="visible", timeout=TIMEOUT_MS)
    assert page.locator("#layer-gallery").get_by_text("block 2").count() >= 1
    for selector in ("#map-attention", "#map-semantic", "#map-coupled"):
        assert shown(page, selector).std() > 1  # a heatmap, not a blank picture
    assert page.locator("#top5").get_by_text(re.compile(r"\d+%")).count() >= 1
    assert "bag.png" in page.locator("#status").inner_text()

    boxes = box_pixels(shown(page, "#prediction"), shown(page, "#map-coupled"))
    assert near(boxes, PRED_COLOR) > 50 and near(boxes, GT_COLOR) > 50

    # What the model knows stands above the image; the reading guide near the top and beside the maps.
    assert "5 classes, 32x32 px input" in page.locator("#model-info").inner_text()
    assert page.locator("#model-info").bounding_box()["y"] < page.locator("#image-input").bounding_box()["y"]
    assert page.locator("#about").bounding_box()["y"] < page.locator("#image-input").bounding_box()["y"]
    assert "M_c = A* x S_c" in page.locator("#short-about").inner_text()
    # The gallery ends under its thumbnails, with no empty band below.
    last = page.locator("#layer-gallery img").last.bounding_box()
    gallery = page.locator("#layer-gallery").bounding_box()
    assert gallery["y"] + gallery["height"] - (last["y"] + last["height"]) < 60

    slider = page.locator("#threshold input[data-testid=range-input]")
    area = slider.bounding_box()
    page.mouse.move(area["x"] + area["width"] * 0.1, area["y"] + area["height"] / 2)
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] * 0.62, area["y"] + area["height"] / 2, steps=8)
    page.mouse.up()
    value = page.locator("#threshold input[data-testid=number-input]").input_value()
    assert 0.4 < float(value) < 0.8
    page.locator("#result-json").get_by_text(re.compile(rf"\b{re.escape(value)}\b")).first.wait_for(
        timeout=TIMEOUT_MS
    )

    boxes = box_pixels(shown(page, "#prediction"), shown(page, "#map-coupled"))
    assert near(boxes, PRED_COLOR) > 50 and near(boxes, GT_COLOR) > 50
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_browser.png"), full_page=True)
    assert (ARTIFACTS / "app_browser.png").stat().st_size > 10_000


def test_pick_a_gradient_method_and_compute_its_map(server, page):
    page.goto(server.url, timeout=TIMEOUT_MS)
    page.locator("#image-input input[type=file]").set_input_files(str(server.examples / "bag.png"))
    page.locator("#prediction img").first.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert not page.locator("#compute-method").is_visible()  # TS-CAM: drawn from the image's pass

    page.locator("#method input").click()
    page.get_by_role("option", name=re.compile(r"^GradCAM \(Selvaraju")).click()
    button = page.get_by_role("button", name="Compute GradCAM (a forward and a backward pass per class)")
    button.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert "not computed yet" in page.locator("#method-status").inner_text()
    page.locator("#prediction img").wait_for(state="detached", timeout=TIMEOUT_MS)  # no map to box yet
    button.click()
    page.locator("#method-status").get_by_text(re.compile(r"computed in [\d.]+ m?s")).wait_for(timeout=TIMEOUT_MS)
    button.wait_for(state="hidden", timeout=TIMEOUT_MS)
    page.locator("#result-json").get_by_text('"gradcam"').first.wait_for(timeout=TIMEOUT_MS)
    assert shown(page, "#prediction").std() > 1  # GradCAM's map and its box (the handler tests check the box)
    page.screenshot(path=str(ARTIFACTS / "app_browser_method.png"), full_page=True)
