"""What a model knows: class names from every source, its domain, and a class picked by name or index."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_info
from test_checkpoint import OFFICIAL_KWARGS, official_file

from tscam_core import DatasetError, create_tscam, load_model, read_checkpoint
from tscam_core.catalog import (
    cub_names,
    domain_of,
    find_class,
    has_names,
    imagenet_names,
    outside_domain_note,
    read_class_names,
)

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "tscam_fashion.safetensors"


def test_cub_names_are_the_200_species_in_class_id_order():
    names = cub_names()
    assert len(names) == 200 and len(set(names)) == 200
    assert names[0] == "Black footed Albatross" and names[16] == "Cardinal" and names[199] == "Common Yellowthroat"


def test_imagenet_names_come_from_timm():
    names = imagenet_names(1000)
    assert len(names) == 1000 and names[0].startswith("tench") and names[281] == "tabby, tabby cat"
    assert imagenet_names(7) is None


def test_an_official_cub_release_gets_the_species_names(tmp_path: Path):
    torch.manual_seed(0)
    source = create_tscam("vit_tiny_patch16_224", 200, **OFFICIAL_KWARGS).eval()
    loaded = load_model(official_file(source, tmp_path / "ts-cam-cub.pth"))
    assert loaded.info.class_names == list(cub_names()) and has_names(loaded.info)
    domain = domain_of(loaded.info)
    assert (domain.dataset, domain.num_classes, domain.input_size) == ("CUB-200-2011", 200, (32, 32))
    assert domain.describe() == "CUB-200-2011: 200 classes, 32x32 px input"


def test_an_official_release_of_another_class_count_has_no_names(tmp_path: Path):
    torch.manual_seed(0)
    source = create_tscam("vit_tiny_patch16_224", 6, **OFFICIAL_KWARGS).eval()
    loaded = load_model(official_file(source, tmp_path / "six.pth"))
    assert not has_names(loaded.info) and domain_of(loaded.info).dataset == "an unnamed dataset"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped checkpoint is absent")
def test_the_shipped_checkpoint_knows_fashion_items():
    info, _ = read_checkpoint(SHIPPED)
    domain = domain_of(info)
    assert domain.dataset.startswith("Cluttered Fashion-MNIST") and domain.num_classes == 10
    assert domain.input_size == (64, 64)


def test_class_names_file(tmp_path: Path):
    path = tmp_path / "names.txt"
    path.write_text("cat\ndog\nbird\n")
    assert read_class_names(path, 3) == ["cat", "dog", "bird"]
    with pytest.raises(DatasetError, match="names.txt: 3 class names for a 5-class model"):
        read_class_names(path, 5)
    path.write_text("cat\n\nbird\n")
    with pytest.raises(DatasetError, match="names.txt:2: empty class name"):
        read_class_names(path)
    with pytest.raises(DatasetError, match="absent.txt: not a readable text file"):
        read_class_names(tmp_path / "absent.txt")


def test_a_class_by_name_or_by_index():
    names = ["shirt", "Shoe", "bag"]
    assert find_class(names, None) is None and find_class(names, "") is None
    assert find_class(names, 2) == find_class(names, "2") == find_class(names, 2.0) == find_class(names, "bag") == 2
    assert find_class(names, "shoe") == 1  # case folded where no exact match
    with pytest.raises(ValueError, match="no class named 'hat' in this model's 3 classes"):
        find_class(names, "hat")
    with pytest.raises(ValueError, match=r"class index 3 is outside 0..2"):
        find_class(names, 3)
    with pytest.raises(ValueError, match="neither a class index nor a class name"):
        find_class(names, True)


def test_a_low_top_score_warns_that_the_image_may_be_outside_the_domain():
    domain = domain_of(tiny_info())
    assert outside_domain_note(domain, 0.9) is None
    note = outside_domain_note(domain, 0.2)
    assert "20.0%" in note and domain.describe() in note
