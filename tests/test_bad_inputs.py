"""The issue-8 corpus through image loading and the whole explain path: a right result or ImageError."""

from __future__ import annotations

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


def test_the_corpus_covers_the_issue():
    names = " ".join(case.name for case in CORPUS)
    for needed in ("truncated.jpg", "truncated.png", "empty", "text.jpg", "one_pixel", "bomb", "gray16", "cmyk",
                   "palette_transparency", "animated.gif", "exif_rotated", "10000x2", "with_zip", "with_html"):
        assert needed in names, needed
    assert len({case.name for case in CORPUS}) == len(CORPUS)
    assert all(isinstance(case.data, bytes) for case in CORPUS)
    assert max(len(case.data) for case in CORPUS if "bomb" in case.name) < 4096


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
