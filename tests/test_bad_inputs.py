"""The issue-8 corpus through image loading and the whole explain path: a right result or ImageError."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import make_tiny_model
from PIL import Image

from tscam_core import explain_file, load_image
from tscam_core.testing.bad_files import BadFile, bad_file_corpus, mutated_corpus, probe
from tscam_core.testing.report import replace_section

CORPUS = bad_file_corpus()

#: Generous bounds: a decoded bomb would take gigabytes and seconds, a normal case takes milliseconds.
MAX_SECONDS = 5.0
MAX_PYTHON_BYTES = 64 * 2**20
MAX_RSS_GROWTH = 256 * 2**20


def decoded(case: BadFile) -> Image.Image:
    """The case opened by Pillow directly, headers only, with no pixel limit (the bombs must open)."""
    return Image.open(io.BytesIO(case.data))


def fully_loaded(case: BadFile) -> bool:
    try:
        with decoded(case) as image:
            for frame in range(getattr(image, "n_frames", 1)):
                image.seek(frame)
                image.load()
    except (OSError, SyntaxError, EOFError, ValueError, IndexError):  # what Pillow raises on broken files
        return False
    return True


#: What each case of the corpus claims to be, checked on its bytes by Pillow, not by tscam's loader.
CLAIMS = {
    "truncated.jpg": lambda c: decoded(c).format == "JPEG" and not fully_loaded(c),
    "truncated.png": lambda c: decoded(c).format == "PNG" and not fully_loaded(c),
    "truncated_header.jpg": lambda c: not fully_loaded(c),
    "truncated_header.png": lambda c: not fully_loaded(c),
    "empty.jpg": lambda c: c.data == b"",
    "text.jpg": lambda c: not fully_loaded(c) and c.data.isascii(),
    "html_with_gif_magic.gif": lambda c: c.data.startswith(b"GIF89a<html>") and not fully_loaded(c),
    "one_pixel.png": lambda c: decoded(c).size == (1, 1) and fully_loaded(c),
    "bomb_50000x50000.png": lambda c: decoded(c).size == (50000, 50000),
    "bomb_8000x6000.png": lambda c: decoded(c).size == (8000, 6000),
    "bomb_60000x60000.jpg": lambda c: decoded(c).size == (60000, 60000),
    "gray16.png": lambda c: decoded(c).mode.startswith("I;16") and fully_loaded(c),
    "cmyk.jpg": lambda c: decoded(c).mode == "CMYK" and fully_loaded(c),
    "palette_transparency.png": lambda c: decoded(c).mode == "P" and "transparency" in decoded(c).info,
    "animated.gif": lambda c: decoded(c).n_frames > 1 and fully_loaded(c),
    "exif_rotated.jpg": lambda c: decoded(c).getexif().get(0x0112, 1) != 1 and fully_loaded(c),
    "wide_10000x2.png": lambda c: decoded(c).size == (10000, 2) and fully_loaded(c),
    "tall_2x10000.png": lambda c: decoded(c).size == (2, 10000) and fully_loaded(c),
    "rgba.png": lambda c: decoded(c).mode == "RGBA" and fully_loaded(c),
    "png_with_zip.png": lambda c: fully_loaded(c) and b"PK\x03\x04" in c.data,
    "jpeg_with_html.jpg": lambda c: fully_loaded(c) and b"<html" in c.data.lower(),
    "truncated_animated.gif": lambda c: decoded(c).format == "GIF" and not fully_loaded(c),
    "truncated_second_frame.gif": lambda c: decoded(c).format == "GIF" and not fully_loaded(c),
    "plain.tif": lambda c: decoded(c).format == "TIFF" and fully_loaded(c),
    "plain.webp": lambda c: decoded(c).format == "WEBP" and fully_loaded(c),
}


def test_the_corpus_covers_the_issue():
    assert len({case.name for case in CORPUS}) == len(CORPUS)
    assert set(CLAIMS) <= {case.name for case in CORPUS}
    assert max(len(case.data) for case in CORPUS if "bomb" in case.name) < 4096


@pytest.mark.parametrize("case", [case for case in CORPUS if case.name in CLAIMS], ids=lambda case: case.name)
def test_each_corpus_file_is_what_its_name_says(case: BadFile, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert CLAIMS[case.name](case)


@pytest.fixture(scope="module")
def tiny_model():
    return make_tiny_model()


def explained_image(model) -> callable:
    def handler(data: bytes) -> Image.Image:
        image, explanation = explain_file(model, data)
        assert explanation.semantic.shape == (1, model.num_classes, 4, 4)
        assert torch.isfinite(explanation.logits).all() and torch.isfinite(explanation.layer_attention).all()
        return image

    return handler


def check(outcome, case: BadFile) -> None:
    assert outcome.result != "crash", f"{case.name}: {outcome.detail}"
    assert outcome.as_expected, f"{case.name}: expected {outcome.expected}, got {outcome.result} ({outcome.detail})"
    if outcome.result == "error":
        assert len(outcome.detail) > 15  # a sentence, not a bare code
    assert outcome.seconds < MAX_SECONDS, (case.name, outcome.seconds)
    assert outcome.python_peak_bytes < MAX_PYTHON_BYTES, (case.name, outcome.python_peak_bytes)
    assert outcome.rss_growth_bytes < MAX_RSS_GROWTH, (case.name, outcome.rss_growth_bytes)


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_load_image(case: BadFile):
    check(probe(case, load_image), case)


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_explain_file(case: BadFile, tiny_model):
    check(probe(case, explained_image(tiny_model)), case)


@pytest.mark.filterwarnings("ignore:Truncated File Read:UserWarning")  # PIL on the damaged TIFFs it reads
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_randomly_damaged_images_never_crash(tiny_model):
    """Seeded mutations of small valid files of many formats: an image or an ImageError, never more."""
    mutants = mutated_corpus(800, seed=0)
    outcomes = [probe(case, load_image) for case in mutants]
    crashes = [(o.name, o.detail) for o in outcomes if o.result == "crash"]
    assert crashes == []
    assert 100 < sum(o.result == "error" for o in outcomes) < 800  # both outcomes are exercised
    for case in mutants[:100]:
        check(probe(case, explained_image(tiny_model)), case)


def test_files_on_disk_keep_their_names_in_errors(tmp_path, tiny_model):
    for case in CORPUS:
        path = tmp_path / case.name
        path.write_bytes(case.data)
        outcome = probe(case, lambda _data, path=path: explain_file(tiny_model, path)[0])
        check(outcome, case)
        if outcome.result == "error":
            assert case.name in outcome.detail, outcome.detail


def test_explain_file_explains_the_image_it_returns(tiny_model):
    image, explanation = explain_file(tiny_model, bad_file_corpus()[-1].data)  # the JPEG + HTML polyglot
    expected = tiny_model.explain(tiny_model.info.transform(image)[None])
    torch.testing.assert_close(explanation.semantic, expected.semantic)
    torch.testing.assert_close(explanation.logits, expected.logits)


def test_the_report_section_is_replaced_in_place(tmp_path):
    path = tmp_path / "reliability.md"
    replace_section(path, "corpus", "first run", title="Reliability")
    path.write_text(path.read_text() + "\n<!-- load:start -->\nother script\n<!-- load:end -->\n")
    replace_section(path, "corpus", "second run")
    text = path.read_text()
    assert text.startswith("# Reliability")
    assert "second run" in text and "first run" not in text and "other script" in text
    assert text.count("<!-- corpus:start -->") == 1 and text.index("second run") < text.index("other script")
