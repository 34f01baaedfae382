"""The explorer's UI-free logic: one forward pass per image, every redraw from the cache."""

from __future__ import annotations

import dataclasses
import json
import threading

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, make_tiny_model, tiny_info
from PIL import Image

from tscam_core import DatasetError, Explanation, ImageError, MapSpec, Preprocess, predict_box
from tscam_core.examples import GroundTruth, read_examples
from tscam_core.explanation import blocks_of
from tscam_core.explorer import (
    DISPLAY_SIDE,
    PAPER_THRESHOLD,
    ExplainedImage,
    Explorer,
    Settings,
)
from tscam_core.images import MAX_COUNTED_FRAMES, conversion_notes, load_image
from tscam_core.overlaps import box_iou
from tscam_core.overlay import GT_COLOR, PRED_COLOR
from tscam_core.testing.bad_files import (
    ascii_orientation_jpeg,
    encode,
    exif_rotated_jpeg,
    many_frame_gif,
    mutated_corpus,
    noise,
    png_bomb,
)

NAMES = ["shirt", "shoe", "bag", "dress", "coat"]


def named_info(**changes):
    return dataclasses.replace(tiny_info(), class_names=list(NAMES), **changes)


def hot_square_explanation() -> Explanation:
    """A 4 x 4 grid where class 1's evidence is the centre 2 x 2 cells and class 3's the top-left cell.

    Block 0's attention peaks on the top-left cell, block 1's on the bottom-right cell.
    """
    semantic = torch.zeros(1, TINY_CLASSES, 4, 4)
    semantic[0, 1, 1:3, 1:3] = 5.0
    semantic[0, 3, 0, 0] = 5.0
    attention = torch.full((1, 2, 4, 4), 0.01)
    attention[0, 0, 0, 0] = 0.85
    attention[0, 1, 3, 3] = 0.85
    logits = semantic.mean(dim=(2, 3)) + torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])
    return Explanation(logits=logits, layer_attention=attention, semantic=semantic)


@pytest.fixture
def counted_model():
    """A tiny real model that counts its forward passes."""
    model = make_tiny_model()
    model.info = named_info()
    calls = []
    model.patch_embed.register_forward_pre_hook(lambda *_: calls.append(1))
    model.calls = calls
    return model


@pytest.fixture
def hot() -> ExplainedImage:
    image = noise(64, 48)
    return ExplainedImage.create(
        image,
        hot_square_explanation(),
        named_info(),
        "hot.png",
        GroundTruth(np.array([[16, 12, 48, 36]], np.float32), 1),
    )


def test_a_cnn_cam_model_is_refused_by_name():
    from tscam_core.cnn_cam import create_cnn_cam

    with pytest.raises(TypeError, match="CNNCAM is not a TS-CAM model"):
        Explorer(create_cnn_cam("resnet10t", 3))


def test_settings_reject_bad_values():
    for bad in (
        dict(threshold=1.5),
        dict(opacity=-0.1),
        dict(colormap="rainbow"),
        dict(map=MapSpec("cam")),  # a CNN's map: the explorer draws transformers' maps
    ):
        with pytest.raises(ValueError):
            Settings(**bad)
    with pytest.raises(ValueError, match="unknown map variant 'gradcam'"):
        Settings(map=MapSpec("gradcam"))  # type: ignore[arg-type]
    # The demo's mode-and-count controls: every block when the count is the depth.
    assert blocks_of("last", 12, 12) == blocks_of("first", 12, 12) == "all"
    assert blocks_of("first", 3, 12) == "first:3"
    with pytest.raises(ValueError, match="outside 1..12"):
        blocks_of("last", 13, 12)
    with pytest.raises(ValueError, match="layer mode must be 'first' or 'last'"):
        blocks_of("middle", 3, 12)


def test_default_threshold_is_the_checkpoints_validated_best():
    assert named_info().default_threshold()[0] == PAPER_THRESHOLD
    assert named_info(recipe={"threshold": 0.2}).default_threshold()[0] == 0.2
    assert (
        named_info(recipe={"threshold": 0.2}, evaluation={"best_threshold": 0.45}).default_threshold()[0] == 0.45
    )
    assert named_info(evaluation={"best_threshold": "high"}).default_threshold()[0] == PAPER_THRESHOLD
    shipped = {"validation": {"threshold": 0.1, "best_threshold": 0.3}, "test": {"threshold": 0.3}}
    assert named_info(recipe={"threshold": 0.1}, evaluation=shipped).default_threshold()[0] == 0.3


def test_best_map_is_the_one_that_localizes_best_on_validation():
    # Without per-map scores: the model's own map at its default threshold.
    spec, threshold, why = named_info(evaluation={"validation": {"best_threshold": 0.3}}).best_map()
    assert (spec, threshold) == (MapSpec("tscam"), 0.3) and "compares no maps" in why
    maps = {"tscam": {"best_threshold": 0.2, "gt_known_loc_best": 0.38},
            "trans_attention": {"best_threshold": 0.35, "gt_known_loc_best": 0.68},
            "trans_cam": {"best_threshold": 0.4, "gt_known_loc_best": 0.16}}
    spec, threshold, why = named_info(evaluation={"validation": {"best_threshold": 0.2, "maps": maps}}).best_map()
    assert (spec, threshold) == (MapSpec("trans_attention"), 0.35)
    assert why.index("TransAttention (A*) 68.0%") < why.index("TS-CAM (A* x S_c) 38.0%") < why.index("16.0%")
    tie = {**maps, "trans_attention": {"best_threshold": 0.35, "gt_known_loc_best": 0.38}}
    assert named_info(evaluation={"validation": {"maps": tie}}).best_map()[0] == MapSpec("tscam")


def test_explain_runs_the_model_once_and_never_again(counted_model):
    explorer = Explorer(counted_model)
    explained = explorer.explain(encode(noise(90, 60), "PNG"), name="noise.png")
    assert len(counted_model.calls) == 1
    assert explained.size == (90, 60) and max(explained.display.size) == DISPLAY_SIDE
    assert explained.explanation.batch_size == 1
    for settings in (
        Settings(),
        Settings(threshold=0.7, colormap="viridis", opacity=0.2),
        Settings(class_index=3, map=MapSpec("trans_cam", "first:1")),
    ):
        explained.render(settings)
        explained.render_maps(settings)
        explained.layer_gallery(settings)
        explained.export(settings)
    assert len(counted_model.calls) == 1


def test_concurrent_sessions_get_their_own_attention(counted_model):
    """The attention hooks sit on the shared model: unserialised passes record each other's rows."""
    explorer = Explorer(counted_model)
    uploads = [encode(noise(40, 40, seed=seed), "PNG") for seed in range(4)]
    expected = [explorer.explain(data).explanation.layer_attention for data in uploads]
    wrong = []

    def session(index: int) -> None:
        for _ in range(15):
            try:
                got = explorer.explain(uploads[index]).explanation.layer_attention
            except Exception as error:  # a mixed-up pass can also fail outright
                wrong.append(repr(error))
                continue
            if got.shape != expected[index].shape or not torch.allclose(got, expected[index], atol=1e-5):
                wrong.append(index)

    threads = [threading.Thread(target=session, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_result_is_the_official_box_scaled_to_the_original(counted_model):
    explained = Explorer(counted_model).explain(encode(noise(96, 40, seed=3), "PNG"))
    settings = Settings(threshold=0.4, class_index=2, map=MapSpec("tscam", "last:1"))
    cam = explained.explanation.maps(MapSpec("tscam", "last:1"), torch.tensor([[2]]))[0, 0]
    expected = predict_box(cam, (32, 32), 0.4) * np.array([96 / 32, 40 / 32, 96 / 32, 40 / 32])
    result = explained.result(settings)
    assert result.class_index == 2 and result.class_name == "bag"
    np.testing.assert_allclose(result.box, expected, atol=1e-4)


def test_hot_square_gives_its_box_and_iou(hot):
    result = hot.result(Settings(threshold=0.5, class_index=1, map=MapSpec("tscam", "first:1")))
    x0, y0, x1, y1 = result.box
    # The centre 2 x 2 cells of a 4 x 4 grid over a 64 x 48 image: about [16, 12, 48, 36].
    assert 10 <= x0 <= 20 and 44 <= x1 <= 54 and 8 <= y0 <= 15 and 33 <= y1 <= 40
    # Scored as the evaluation scores it: the map's box against the GT boxes in the model-input frame.
    transform = hot.info.transform
    cam = hot.explanation.maps(MapSpec("tscam", "first:1"), torch.tensor([[1]]))[0, 0]
    found = predict_box(cam, transform.input_size, 0.5)
    assert result.iou == float(box_iou(found, transform.boxes_to_input(hot.truth.boxes, hot.size)).max())
    assert result.iou > 0.6


def test_top1_is_the_default_class_and_any_class_can_be_picked(hot):
    assert hot.result(Settings()).class_index == 1
    assert [c.index for c in hot.ranked_classes(2)] == [1, 3]
    assert hot.result(Settings(class_index=3, threshold=0.5, map=MapSpec("tscam", "first:1"))).box[0] < 10
    with pytest.raises(ValueError, match="outside 0..4"):
        hot.result(Settings(class_index=5))


def test_layers_and_variants_change_the_map(hot):
    first = Settings(threshold=0.5, class_index=3, map=MapSpec("trans_attention", "first:1"))
    last = dataclasses.replace(first, map=MapSpec("trans_attention", "last:1"))
    # Block 0 peaks top-left, block 1 bottom-right.
    assert hot.result(first).box[2] < 32 and hot.result(first).box[3] < 24
    assert hot.result(last).box[0] > 32 and hot.result(last).box[1] > 24
    # TransAttention ignores the class; TS-CAM does not.
    assert hot.result(last).box.tolist() == hot.result(dataclasses.replace(last, class_index=1)).box.tolist()
    tscam = dataclasses.replace(first, map=MapSpec("tscam", "first:1"))
    assert (
        hot.result(tscam).box.tolist() != hot.result(dataclasses.replace(tscam, class_index=1)).box.tolist()
    )


def test_render_draws_the_predicted_and_gt_boxes(hot):
    hot = dataclasses.replace(hot, truth=GroundTruth(np.array([[4, 4, 60, 44]], np.float32)))
    settings = Settings(threshold=0.5, class_index=1, opacity=0.0)
    picture = np.asarray(hot.render(settings))
    assert picture.shape == (hot.display.height, hot.display.width, 3)
    scale = hot.display.width / 64
    gt_top = int(round(4 * scale))
    gt_mid_x = int(round(32 * scale))
    assert tuple(picture[gt_top, gt_mid_x]) == GT_COLOR
    x0, y0, x1, y1 = (int(round(v * scale)) for v in hot.result(settings).box)
    left_edge = picture[(y0 + y1) // 2, x0]
    assert tuple(left_edge) == PRED_COLOR
    # Opacity 0 leaves every pixel off the boxes as the image itself.
    assert np.array_equal(picture[2:20, 2:20], np.asarray(hot.display)[2:20, 2:20])


def test_render_maps_are_the_three_maps_over_the_image(hot):
    maps = hot.render_maps(Settings(class_index=1, opacity=1.0, colormap="bone"))
    assert set(maps) == {"A*", "S_c", "M_c"}
    a_star, s_c = np.asarray(maps["A*"]).astype(int), np.asarray(maps["S_c"]).astype(int)
    # A* (all blocks) is brightest in two corners; S_c of class 1 in the centre.
    height, width = a_star.shape[:2]
    assert a_star[height - 3, width - 3].sum() > a_star[height // 2, width // 2].sum()
    assert s_c[height // 2, width // 2].sum() > s_c[3, 3].sum()
    clean = hot.render_maps(Settings(opacity=0.0))
    assert np.array_equal(np.asarray(clean["M_c"]), np.asarray(hot.display))


def test_layer_gallery_is_captioned_and_cached(hot):
    gallery = hot.layer_gallery(Settings(map=MapSpec("tscam", "last:1")))
    assert [caption for _, caption in gallery] == ["block 1", "block 2 · in A*"]
    again = hot.layer_gallery(Settings(threshold=0.8, class_index=3, map=MapSpec("tscam", "last:2")))
    assert [caption for _, caption in again] == ["block 1 · in A*", "block 2 · in A*"]
    assert all(a is b for (a, _), (b, _) in zip(gallery, again, strict=True))
    recoloured = hot.layer_gallery(Settings(colormap="viridis"))
    assert all(a is not b for (a, _), (b, _) in zip(gallery, recoloured, strict=True))
    block2 = np.asarray(recoloured[1][0]).astype(int)
    assert block2[-2, -2].sum() != block2[1, 1].sum()


def test_export_is_json_with_boxes_scores_and_settings(hot):
    settings = Settings(threshold=0.35, class_index=1, colormap="magma", map=MapSpec("tscam", "first:1"))
    record = json.loads(json.dumps(hot.export(settings)))
    assert record["image"] == {"name": "hot.png", "width": 64, "height": 48}
    assert record["prediction"]["box"] == pytest.approx(hot.result(settings).box.tolist())
    assert record["prediction"]["class_name"] == "shoe"
    assert record["settings"]["threshold"] == 0.35 and record["settings"]["blocks"] == [1]
    assert record["settings"]["colormap"] == "magma"
    assert [t["class_index"] for t in record["top5"]][:2] == [1, 3] and len(record["top5"]) == 5
    assert record["ground_truth"]["class_name"] == "shoe"
    assert record["ground_truth"]["iou"] == pytest.approx(hot.result(settings).iou, abs=1e-4)


def test_center_crop_preprocessing_keeps_maps_inside_the_crop():
    info = named_info(preprocess=Preprocess((32, 32), (64, 64)).to_config())  # resize 64, crop 32
    explained = ExplainedImage.create(noise(128, 128), hot_square_explanation(), info)
    box = explained.result(Settings(threshold=0.5, class_index=1, map=MapSpec("trans_cam"))).box
    # The crop is the centre half of the image, [32, 32, 96, 96]; class 1's square is its centre half.
    assert 40 <= box[0] <= 52 and 76 <= box[2] <= 88 and 40 <= box[1] <= 52 and 76 <= box[3] <= 88
    heat = np.asarray(explained.render_maps(Settings(opacity=1.0, colormap="bone"))["A*"])
    assert heat[5, 5].sum() == 0  # outside the crop the map is zero: bone's black


def test_bad_uploads_raise_image_errors_that_name_the_file(counted_model):
    explorer = Explorer(counted_model)
    png = encode(noise(40, 30), "PNG")
    big = png_bomb(8000, 6000)
    for data, message in (
        (b"just text", "not an image"),
        (png[: len(png) // 2], "truncated|damaged|read"),
        (big, "over the limit"),
        (b"", "not an image"),
    ):
        with pytest.raises(ImageError, match=message) as caught:
            explorer.explain(data, name="upload.png")
        assert str(caught.value).startswith("upload.png:")
    with pytest.raises(ImageError, match="no image file"):
        explorer.explain("/nonexistent/photo.jpg")
    assert counted_model.calls == []


def test_converted_uploads_are_explained_with_a_note(counted_model):
    explorer = Explorer(counted_model)
    frames = [noise(40, 30, seed=s).convert("P") for s in range(3)]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    sixteen = encode(Image.fromarray(np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50), "PNG")
    cmyk = encode(noise(40, 30).convert("CMYK"), "JPEG")
    for data, note in ((gif, "3 frames"), (sixteen, "rescaled to 8-bit"), (cmyk, "CMYK")):
        explained = explorer.explain(data)
        assert any(note in text for text in explained.notes), explained.notes
        assert explained.display.mode == "RGB"
    assert explorer.explain(encode(noise(40, 30), "PNG")).notes == ()


def test_notes_say_only_what_load_image_did():
    rotated = "EXIF orientation applied: the image is shown upright"
    assert rotated in conversion_notes(exif_rotated_jpeg(orientation=6))
    for data in (exif_rotated_jpeg(orientation=99), ascii_orientation_jpeg()):
        assert conversion_notes(data) == []
        assert load_image(data).size == (40, 20)  # not rotated either
    keyed = encode(Image.new("L", (4, 2), 7), "PNG", transparency=7)  # grey 7 is the transparent colour
    assert conversion_notes(keyed) == ["transparent image: flattened onto white"]
    assert (np.asarray(load_image(keyed)) == 255).all()


def test_frames_are_counted_up_to_a_bound():
    assert conversion_notes(many_frame_gif(MAX_COUNTED_FRAMES)) == [
        f"animated image with {MAX_COUNTED_FRAMES} frames: the first frame is explained"]
    assert conversion_notes(many_frame_gif(100_000)) == [  # counting them all took 9 s a million
        f"animated image with more than {MAX_COUNTED_FRAMES:,} frames: the first frame is explained"]


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL's notes on the damaged files
def test_a_multipage_tiff_with_damaged_later_pages_is_explained_or_refused(counted_model):
    """load_image decodes only the first page; the notes count every page and must not crash on a bad one."""
    explorer = Explorer(counted_model)
    pages = [noise(64, 64, seed=s) for s in range(3)]
    tiff = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    notes = set()
    for cut in range(len(tiff) // 3, len(tiff), 97):  # truncated downloads of every length
        try:
            notes.update(explorer.explain(tiff[:cut], name="scan.tif").notes)
        except ImageError as error:
            assert str(error).startswith("scan.tif:")
    assert any("some damaged" in note for note in notes), notes
    mutants = [case for case in mutated_corpus(300, seed=0) if case.name.endswith(".tif")]
    for case in mutants:  # seeded damage: a list of notes or an ImageError from load_image, nothing else
        try:
            load_image(case.data)
        except ImageError:
            continue
        assert isinstance(conversion_notes(case.data), list)


def test_examples_attach_their_ground_truth_by_content(tmp_path, counted_model):
    folder = tmp_path / "examples"
    folder.mkdir()
    noise(50, 40, seed=1).save(folder / "a.png")
    noise(50, 40, seed=2).save(folder / "b.png")
    noise(50, 40, seed=3).save(folder / "c.png")
    (folder / "examples.json").write_text(
        json.dumps(
            {
                "examples": [
                    {"file": "a.png", "class_index": 2, "class_name": "bag", "boxes": [[5, 6, 30, 35]]},
                    {"file": "b.png", "class": 4, "boxes": [[1, 2, 3, 4], [10, 10, 20, 20]]},
                    {"file": "c.png", "class_index": 1, "class_name": "zebra", "boxes": [[0, 0, 9, 9]]},
                ]
            }
        )
    )
    examples = read_examples(folder, NAMES)
    # A class this model does not have (by name) leaves the boxes without a class.
    assert [(e.path.name, e.truth.class_index, e.class_name) for e in examples] == [
        ("a.png", 2, "bag"),
        ("b.png", 4, "coat"),
        ("c.png", None, ""),
    ]
    assert examples[1].truth.boxes.shape == (2, 4)
    explorer = Explorer(counted_model, examples)
    copy = tmp_path / "renamed.png"
    copy.write_bytes((folder / "a.png").read_bytes())
    explained = explorer.explain(copy)
    assert explained.truth.class_index == 2 and explained.truth.boxes.tolist() == [[5, 6, 30, 35]]
    assert explained.result(Settings()).iou is not None
    assert explorer.explain(encode(noise(50, 40, seed=9), "PNG")).truth is None


def test_examples_absent_or_malformed(tmp_path):
    assert read_examples(tmp_path / "missing", NAMES) == []
    (tmp_path / "examples.json").write_text("{not json")
    with pytest.raises(DatasetError, match="examples.json"):
        read_examples(tmp_path, NAMES)
    noise(10, 10).save(tmp_path / "a.png")
    for entries, message in (
        ([{"file": "gone.png"}], "no image file"),
        ([{"file": "a.png", "boxes": [[1, 2, 3]]}], "boxes must be"),
        ([{"file": "a.png", "boxes": {"x0": 1, "y0": 2, "x1": 3, "y1": 4}}], "boxes must be"),
        ([{"file": "a.png", "boxes": [{"x0": 1, "y0": 2, "x1": 3, "y1": 4}]}], "boxes must be"),
        ([{"file": "a.png", "boxes": [[1, None, 3, 4]]}], "must be numbers"),
        ({"examples": "a.png"}, "list of examples"),
    ):
        (tmp_path / "examples.json").write_text(json.dumps(entries))
        with pytest.raises(DatasetError, match=message):
            read_examples(tmp_path, NAMES)


def test_the_sign_convention_is_part_of_the_cached_map(counted_model):
    """The dashboard shows a run's maps signed as the run scored them: a signed spec must not be served
    the rectified map cached for the same class and blocks."""
    explained = Explorer(counted_model).explain(encode(noise(40, 30), "PNG"))
    settings = Settings(class_index=0, threshold=0.1)
    rectified = explained.cam(MapSpec("trans_cam"), settings)
    signed = explained.cam(MapSpec("trans_cam", signed=True), settings)
    torch.testing.assert_close(signed, explained.explanation.semantic[0, 0])
    assert rectified.min() >= 0 and signed.min() < 0  # random S_c has negatives
