"""The TS-CAM explorer: a Gradio page over ``tscam_core.explorer``, also a Hugging Face Space.

    python app.py                                   # the shipped checkpoint
    python app.py --checkpoint timm:deit_small_patch16_224 --host 0.0.0.0 --port 7860

Only wiring lives here: every map, box and number comes from ``tscam_core.explorer``, which
caches one explanation per session so that moving a control never runs the model again.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import gradio as gr
from gradio.utils import get_upload_folder, is_in_or_equal

from tscam_core import (
    COLORMAPS,
    VARIANT_LABELS,
    VARIANTS,
    CheckpointError,
    DatasetError,
    ImageError,
    MapSpec,
    load_model,
)
from tscam_core.explanation import blocks_of
from tscam_core.explorer import ExplainedImage, Explorer, Settings, default_threshold, read_examples

HERE = Path(__file__).resolve().parent
log = logging.getLogger("tscam.app")
DEFAULT_CHECKPOINT = HERE / "checkpoints" / "tscam_fashion.safetensors"
EXAMPLES_DIR = HERE / "examples"

# Serving limits (docs/demo.md explains each).
QUEUE_SIZE = 64  # events waiting at once; more are refused with "queue full"
CONCURRENCY = 2  # events run at once, all listeners together (2 CPU cores on a free Space)
# Every listener joins this one concurrency group: by default Gradio gives each listener its own,
# so four listeners would run up to 4 x CONCURRENCY events at once.
CONCURRENCY_GROUP = "explorer"
MAX_UPLOAD_BYTES = 25 * 2**20  # uploads, and any file the demo reads
NOT_UPLOADED = "Only images uploaded to this page, or its examples, can be explained."
SESSION_CAPACITY = 200  # sessions whose cached explanation stays in memory
STATE_TTL_S = 3600
EXPORT_TTL_S = 600
EXPORT_ROOT = Path(tempfile.gettempdir()) / "tscam-exports"
# Views are sent as JPEG: Gradio's default WebP takes longer to encode than the redraw itself.
# The exported overlay is a PNG.
VIEW_FORMAT = "jpeg"

ABOUT = """
**What the pictures are** (TS-CAM, ICCV 2021). A vision transformer cuts the image into patches
(tokens) and, block after block, lets every token look at every other one.

* **Prediction**: the selected map over the image, the box TS-CAM draws around the object (red)
  and, for the examples, the true box (green) with their overlap (IoU, 1 = perfect).
* **A\\* (where the model looks)**: how much the special *class token*, which makes the
  decision, attends to each patch, averaged over the chosen blocks. It covers whole objects
  but does not know which class it is looking for.
* **S_c (what looks like the class)**: for each patch, how strongly it says "class c". It knows
  the class but is patchy.
* **M_c = A\\* x S_c (TS-CAM)**: the product keeps the regions that are both attended to and of
  class c. The box is drawn around the largest region above *threshold x maximum*.
* **Per-layer attention A^l**: A\\* block by block. Early blocks look around locally; later ones
  gather the object. "in A\\*" marks the blocks averaged under the current layer setting.

**Controls** change only the drawing, never the model's pass: class (any class can be shown,
not just the top one), blocks (first or last k), threshold (higher: tighter box), the map
used for the box (TS-CAM, or its ablations TransAttention = A\\* alone and TransCAM = S_c alone),
opacity and colormap.
"""


def uploads_only(image: gr.Image) -> gr.Image:
    """Make ``image`` pass on the path of a file Gradio stored from an upload or an example, and nothing else.

    Gradio 6 confines input files to its upload cache only for payloads tagged as FileData; a raw
    API call without the tag can name any path on the server. Every path outside the cache (the
    rule Gradio applies to component props: ``is_in_or_equal(path, get_upload_folder())``) gets one
    refusal, the same whether it exists or not, before anything is opened. The path is handed on
    unopened, for ``Explorer.explain`` to check its size and kind before reading and to name every
    bad file clearly. (Not a subclass: Gradio writes a .pyi stub next to any module that subclasses
    a component.)
    """

    def preprocess(payload: Any) -> str | None:
        if payload is None:
            return None
        path = payload.path
        if not path or not is_in_or_equal(path, get_upload_folder()):
            refuse(NOT_UPLOADED, f"path outside the upload cache: {str(path)[:200]!r}")
        return path

    image.preprocess = preprocess
    return image


def refuse(message: str, reason: str, title: str = "This file cannot be used") -> NoReturn:
    """One line in the server's log and one message for the visitor; the traceback only at DEBUG."""
    log.info("refused: %s (%s)", message, reason)
    log.debug("refused input", exc_info=True)
    raise gr.Error(message, title=title, print_exception=False)


def settings_from(
    explained: ExplainedImage,
    class_index: Any,
    layer_mode: str,
    layer_count: float,
    threshold: float,
    variant: str,
    opacity: float,
    colormap: str,
) -> Settings:
    """The controls' values as Settings; a bad value (from an API client) is a message, not a crash."""
    try:
        return explained.check(
            Settings(
                class_index=None if class_index in (None, "") else int(class_index),
                map=MapSpec(variant, blocks_of(layer_mode, int(layer_count), explained.depth)),
                threshold=float(threshold),
                opacity=float(opacity),
                colormap=colormap,
            )
        )
    except (TypeError, ValueError) as error:
        refuse(str(error), "invalid setting", title="Invalid setting")


def no_image() -> None:
    """A control moved with no image in the session: none uploaded yet, or the session expired."""
    gr.Warning(
        f"Upload an image or pick an example first (an image is kept {STATE_TTL_S // 60} min).",
        title="No image",
    )


class Handlers:
    """The page's event handlers: plain methods, called by Gradio and directly by the tests."""

    def __init__(self, explorer: Explorer, export_root: Path = EXPORT_ROOT) -> None:
        self.explorer = explorer
        self.export_root = export_root

    def analyze(
        self,
        path: str | None,
        layer_mode: str,
        layer_count: float,
        threshold: float,
        variant: str,
        opacity: float,
        colormap: str,
    ) -> tuple:
        """A new image: one forward pass, then every view at the current settings (top-1 class)."""
        if path is None:
            return None, gr.Dropdown(choices=[], value=None), None, None, None, None, None, [], None, ""
        started = time.perf_counter()
        try:
            explained = self.explorer.explain(path)
        except ImageError as error:
            refuse(str(error), "unusable image")
        settings = settings_from(
            explained, None, layer_mode, layer_count, threshold, variant, opacity, colormap
        )
        ranked = explained.ranked_classes()
        views = self._views(explained, settings)
        width, height = explained.size
        status = (
            f"**{explained.name}** ({width}x{height}) explained in {time.perf_counter() - started:.2f} s: "
            f"top-1 **{ranked[0].name}** ({ranked[0].score:.1%})."
        )
        truth = explained.truth
        if truth is not None:
            named = (
                "" if truth.class_index is None else f"class **{explained.class_names[truth.class_index]}**, "
            )
            status += f" Ground truth known: {named}{len(truth.boxes)} box(es), in green."
        for note in explained.notes:
            gr.Warning(note, title="Image converted")
            status += f"\n\nNote: {note}."
        choices = [(f"{c.name} ({c.score:.1%})", c.index) for c in ranked]
        top5 = {c.name: c.score for c in ranked[:5]}
        return (explained, gr.Dropdown(choices=choices, value=ranked[0].index), top5, *views, status)

    def redraw(self, explained: ExplainedImage | None, *controls: Any) -> tuple:
        """Every view again from the cache: class, layers, variant, opacity or colormap changed."""
        if explained is None:
            no_image()
            return None, None, None, None, [], None
        return self._views(explained, settings_from(explained, *controls))

    def redraw_box(self, explained: ExplainedImage | None, *controls: Any) -> tuple:
        """Only the threshold changed: the maps and the gallery stay, the box moves."""
        if explained is None:
            no_image()
            return None, None
        settings = settings_from(explained, *controls)
        result = explained.result(settings)
        return explained.render(settings, result), explained.export(settings, result)

    def export(self, explained: ExplainedImage | None, *controls: Any) -> list[str]:
        """The overlay as PNG and the boxes, scores and settings as JSON, as files to download."""
        if explained is None:
            refuse(
                "Upload an image or pick an example first.",
                "export without an image",
                title="Nothing to export",
            )
        settings = settings_from(explained, *controls)
        result = explained.result(settings)
        folder = self._export_folder()
        stem = Path(explained.name).stem or "image"
        png, record = folder / f"{stem}-tscam.png", folder / f"{stem}-tscam.json"
        explained.render(settings, result).save(png)
        record.write_text(json.dumps(explained.export(settings, result), indent=2), encoding="utf-8")
        return [str(png), str(record)]

    def _views(self, explained: ExplainedImage, settings: Settings) -> tuple:
        result = explained.result(settings)
        maps = explained.render_maps(settings)
        return (
            explained.render(settings, result),
            maps["A*"],
            maps["S_c"],
            maps["M_c"],
            explained.layer_gallery(settings),
            explained.export(settings, result),
        )

    def _export_folder(self) -> Path:
        """A fresh folder per export; folders older than EXPORT_TTL_S go (Gradio has copied them by then)."""
        self.export_root.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for old in self.export_root.iterdir():
            if old.is_dir() and now - old.stat().st_mtime > EXPORT_TTL_S:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.export_root))


def build_demo(explorer: Explorer) -> gr.Blocks:
    handlers = Handlers(explorer)
    depth = explorer.depth
    info = explorer.info
    with gr.Blocks(title="TS-CAM explorer", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        gr.Markdown(
            f"# TS-CAM explorer\nWhere does a vision transformer see the object? Model: `{info.arch}`, "
            f"{info.num_classes} classes, {depth} blocks. Upload or paste an image, or pick an example."
        )
        state = gr.State(None, time_to_live=STATE_TTL_S)
        with gr.Row():
            with gr.Column(scale=1):
                image_input = uploads_only(
                    gr.Image(
                        label="Image",
                        type="filepath",
                        image_mode=None,
                        sources=["upload", "clipboard"],
                        height=300,
                        elem_id="image-input",
                    )
                )
                if explorer.examples:
                    gr.Examples(
                        [[str(example.path)] for example in explorer.examples],
                        inputs=[image_input],
                        label="Examples (ground-truth box in green)",
                        examples_per_page=12,
                    )
                status = gr.Markdown(elem_id="status")
                class_choice = gr.Dropdown(label="Class", choices=[], value=None, elem_id="class-choice")
                variant = gr.Radio(
                    [(VARIANT_LABELS[v], v) for v in VARIANTS],
                    value="tscam",
                    label="Map used for the box",
                    elem_id="variant",
                )
                with gr.Row():
                    layer_mode = gr.Radio(
                        [("last k blocks", "last"), ("first k blocks", "first")],
                        value="last",
                        label="Blocks in A*",
                        elem_id="layer-mode",
                    )
                    layer_count = gr.Slider(
                        1, depth, value=depth, step=1, label="k (number of blocks)", elem_id="layer-count"
                    )
                threshold = gr.Slider(
                    0.0,
                    1.0,
                    value=default_threshold(info),
                    step=0.01,
                    label="CAM threshold",
                    elem_id="threshold",
                )
                with gr.Row():
                    opacity = gr.Slider(
                        0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity", elem_id="opacity"
                    )
                    colormap = gr.Dropdown(list(COLORMAPS), value="jet", label="Colormap", elem_id="colormap")
            with gr.Column(scale=2):
                prediction = gr.Image(
                    label="Prediction: map, predicted box (red), GT box (green)",
                    format=VIEW_FORMAT,
                    interactive=False,
                    elem_id="prediction",
                )
                top5 = gr.Label(label="Top-5 classes", num_top_classes=5, elem_id="top5")
        with gr.Row():
            map_views = [
                gr.Image(label=label, format=VIEW_FORMAT, interactive=False, elem_id=f"map-{key}")
                for key, label in (
                    ("attention", "A* (attention)"),
                    ("semantic", "S_c (semantic map)"),
                    ("coupled", "M_c = A* x S_c (TS-CAM)"),
                )
            ]
        gallery = gr.Gallery(
            label="Per-layer attention A^l (block number)",
            columns=6,
            height="auto",
            format=VIEW_FORMAT,
            elem_id="layer-gallery",
        )
        with gr.Row():
            export_button = gr.Button("Export overlay PNG + JSON", elem_id="export")
            export_files = gr.File(label="Downloads", file_count="multiple", interactive=False, height=120)
        result_json = gr.JSON(label="Result (boxes in original-image pixels)", elem_id="result-json")
        with gr.Accordion("What am I looking at?", open=False):
            gr.Markdown(ABOUT)

        controls = [layer_mode, layer_count, threshold, variant, opacity, colormap]
        all_controls = [class_choice, *controls]
        views = [prediction, *map_views, gallery, result_json]
        image_input.change(
            handlers.analyze,
            [image_input, *controls],
            [state, class_choice, top5, *views, status],
            api_name="analyze",
            concurrency_id=CONCURRENCY_GROUP,
        )
        gr.on(
            [
                class_choice.input,
                variant.change,
                layer_mode.change,
                layer_count.change,
                opacity.change,
                colormap.change,
            ],
            handlers.redraw,
            [state, *all_controls],
            views,
            api_name="redraw",
            concurrency_id=CONCURRENCY_GROUP,
            trigger_mode="always_last",
            show_progress="hidden",
        )
        threshold.change(
            handlers.redraw_box,
            [state, *all_controls],
            [prediction, result_json],
            api_name="redraw_box",
            concurrency_id=CONCURRENCY_GROUP,
            trigger_mode="always_last",
            show_progress="hidden",
        )
        export_button.click(
            handlers.export,
            [state, *all_controls],
            export_files,
            api_name="export",
            concurrency_id=CONCURRENCY_GROUP,
        )
    return demo


def load_explorer(checkpoint: str | Path, examples_dir: str | Path = EXAMPLES_DIR) -> Explorer:
    model = load_model(checkpoint)
    try:
        examples = read_examples(examples_dir, model.info.class_names)
    except DatasetError as error:
        print(f"app.py: examples skipped: {error}", file=sys.stderr)
        examples = []
    return Explorer(model, examples, max_file_bytes=MAX_UPLOAD_BYTES)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The TS-CAM explorer (Gradio).")
    parser.add_argument(
        "--checkpoint",
        default=str(DEFAULT_CHECKPOINT),
        help="a tscam .safetensors file, an official TS-CAM release file, timm:NAME or hf://owner/repo/file",
    )
    parser.add_argument(
        "--examples", default=str(EXAMPLES_DIR), help="folder with examples.json (default: examples/)"
    )
    parser.add_argument(
        "--host", default=None, help="address to listen on (default: GRADIO_SERVER_NAME or 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING"],
        help="INFO logs one line per refused input; DEBUG adds its traceback",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(args.log_level)
    try:
        explorer = load_explorer(args.checkpoint, args.examples)
    except CheckpointError as error:
        hint = (
            " (train it with `python train/run.py --preset fashion`)"
            if args.checkpoint == str(DEFAULT_CHECKPOINT)
            else ""
        )
        sys.exit(f"app.py: {error}{hint}; pass another one with --checkpoint")
    demo = build_demo(explorer)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        max_file_size=MAX_UPLOAD_BYTES,
        state_session_capacity=SESSION_CAPACITY,
        show_error=True,
    )


if __name__ == "__main__":
    main()
