"""The TS-CAM explorer: a Gradio page over ``tscam_core.explorer``, also a Hugging Face Space.

    python app.py                                   # the shipped checkpoint
    python app.py --checkpoint timm:deit_small_patch16_224 --host 0.0.0.0 --port 7860

Only wiring lives here: every map, box and number comes from ``tscam_core.explorer``, which
caches one explanation per session so that moving a control never runs the model again.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import gradio as gr
from gradio.utils import get_upload_folder, is_in_or_equal

from tscam_core import COLORMAPS, CheckpointError, DatasetError, ImageError, load_model
from tscam_core.catalog import domain_of, find_class, has_names, outside_domain_note, read_class_names
from tscam_core.examples import Example, ExampleSet, read_example_sets
from tscam_core.explanation import DEFAULT_LAYER_MODE, LAYER_MODES, blocks_of
from tscam_core.explorer import ExplainedImage, Explorer, Settings
from tscam_core.explorer_methods import MapNotComputed, picker_choices
from tscam_core.model_zoo import MODELS_VARIABLE, ModelZoo, default_sources, sources_from_environment

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
A vision transformer cuts the image into patches (tokens) and, block after block, lets every token
look at every other one. TS-CAM (ICCV 2021) turns what it sees into a box, without ever having been
shown a box in training.

* **Prediction**: the selected map over the image, the box TS-CAM draws around the object (red) and,
  for the examples with a known box, the true box (green) with their overlap (IoU, 1 = perfect).
* **A\\* (where the model looks)**: how much the special *class token*, which makes the decision,
  attends to each patch, averaged over the chosen blocks. It covers whole objects but does not know
  which class it is looking for.
* **S_c (what looks like the class)**: for each patch, how strongly it says "class c". It knows the
  class but is patchy.
* **M_c = A\\* x S_c (TS-CAM)**: the product keeps the regions that are both attended to and of
  class c.
* **The box**: the map is scaled to the model's input, every pixel above *threshold x maximum* is
  kept, and the box surrounds the largest kept region. A higher threshold gives a tighter box.
* **Per-layer attention A^l**: A\\* block by block. Early blocks look around locally; later ones
  gather the object. "in A\\*" marks the blocks averaged under the current setting.

**Controls** change only the drawing, never the model's pass: class (any class can be shown, not
just the top one), blocks (last or first k), threshold, opacity and colormap.

**Method** (the map used for the box), each listed with what it costs: TS-CAM and its ablations
TransAttention = A\\* alone and TransCAM = S_c alone are drawn at once from the image's pass. The
other methods need passes of their own: attention rollout (one forward pass) and the gradient
methods, Chefer et al.'s and the GradCAM family (a forward and a backward pass per class). Their
map is computed when you press **Compute**, once per image and class; then the threshold, opacity
and colormap redraw it without computing again.

**A model knows only its classes.** It names the closest of them whatever the image shows: a photo
of a cat given to a clothing model still gets a garment's name. Pick a model whose domain fits the
image; the page warns when the best score is low.
"""
#: The one-line reading of each picture, shown beside the maps.
SHORT_ABOUT = """
**How to read them.** **A\\***: where the class token looks (any object). **S_c**: which patches
look like the chosen class. **M_c = A\\* x S_c**: both at once, TS-CAM's map. The red **box**
surrounds the largest region of the selected map above *threshold x its maximum*.
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


def class_by_name_or_index(dropdown: gr.Dropdown) -> gr.Dropdown:
    """Make ``dropdown`` declare to API clients that it takes a class name or index.

    Its choices are filled per image, so Gradio would declare an empty ``Literal[]``; with
    ``allow_custom_value`` any value reaches the handlers, which resolve it (``catalog.find_class``).
    """
    dropdown.api_info = lambda: {
        "anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}],
        "description": "a class name or index of the model; empty or null: the top-1 class",
    }
    return dropdown


def refuse(message: str, reason: str, title: str = "This file cannot be used") -> NoReturn:
    """One line in the server's log and one message for the visitor; the traceback only at DEBUG."""
    log.info("refused: %s (%s)", message, reason)
    log.debug("refused input", exc_info=True)
    raise gr.Error(message, title=title, print_exception=False)


NO_IMAGE = (
    f"No image in this session: upload one or pick an example first (an image is kept {STATE_TTL_S // 60} min). "
    "API clients: call /analyze first with the same Client, or use /explain_image, which needs no session."
)


def session_controls(
    explained: ExplainedImage | None,
    chosen_class: Any,
    layer_mode: str,
    layer_count: float,
    threshold: float,
    method: str,
    opacity: float,
    colormap: str,
) -> tuple[ExplainedImage, Settings]:
    """The session's image and the controls' values as Settings. No image (never analysed, or expired)
    and a bad value (from an API client: a method the model cannot give too) are one clear message
    each, not a crash. The parameter names are the API's, for every endpoint that redraws."""
    if explained is None:
        refuse(NO_IMAGE, "redraw without an image", title="No image")
    try:
        return explained, explained.settings(
            method,
            blocks_of(layer_mode, int(layer_count), explained.depth),
            class_index=find_class(explained.class_names, chosen_class),
            threshold=float(threshold),
            opacity=float(opacity),
            colormap=colormap,
        )
    except (TypeError, ValueError) as error:
        refuse(str(error), "invalid setting", title="Invalid setting")


def takes_session_controls(method: Callable[..., Any]) -> Callable[..., Any]:
    """A handler of (image, settings) as Gradio calls it: with the session's state and the controls, named
    as ``session_controls`` names them (Gradio reads a handler's signature for the API's names)."""

    @functools.wraps(method)
    def handler(self: Handlers, *values: Any) -> Any:
        return method(self, *session_controls(*values))

    controls = inspect.signature(session_controls).parameters.values()
    handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *controls]
    )
    handler.__annotations__ = {key: value for key, value in session_controls.__annotations__.items() if key != "return"}
    return handler


def describe_model(label: str, explorer: Explorer) -> str:
    """What the page says above the image: the model, its domain and its classes."""
    info = explorer.info
    names = info.class_names
    shown = "; ".join(names[:6]) + (f"; ... ({len(names)} in all)" if len(names) > 6 else "")
    text = f"**Model `{label}`** knows **{domain_of(info).describe()}**. Classes: {shown}."
    if not has_names(info):
        text += " (This model carries no class names: start the app with `--class-names FILE`.)"
    spec, _, why = info.best_map()
    return text + (" Images unlike these get the closest class it knows, whatever they show. "
                   f"The page opens on **{spec.label}**: {why}.")


class Handlers:
    """The page's event handlers: plain methods, called by Gradio and directly by the tests.

    Parameter names are the API's: gradio_client users call them by these names.
    """

    def __init__(self, zoo: ModelZoo, example_sets: Sequence[ExampleSet] = (), export_root: Path = EXPORT_ROOT) -> None:
        self.zoo = zoo
        self.example_sets = list(example_sets)
        self.export_root = export_root

    def explorer(self, model: str) -> Explorer:
        """The model a visitor picked, loaded on first use; one clear message where it cannot be."""
        try:
            return self.zoo.get(model)
        except KeyError as error:
            refuse(error.args[0], "unknown model", title="Unknown model")
        except CheckpointError as error:
            refuse(f"{model} cannot be loaded: {error}", "model not loadable", title="Model unavailable")

    def analyze(
        self,
        image: str | None,
        model: str,
        layer_mode: str,
        layer_count: float,
        threshold: float,
        method: str,
        opacity: float,
        colormap: str,
    ) -> tuple:
        """A new image: one forward pass, then every view at the current settings (top-1 class)."""
        if image is None:
            return None, gr.Dropdown(choices=[], value=None), None, None, None, None, None, [], None, ""
        started = time.perf_counter()
        explorer = self.explorer(model)
        try:
            explained = explorer.explain(image)
        except ImageError as error:
            refuse(str(error), "unusable image")
        _, settings = session_controls(explained, None, layer_mode, layer_count, threshold, method, opacity, colormap)
        ranked = explained.ranked_classes()
        views = self._views(explained, settings)
        width, height = explained.size
        status = (
            f"**{explained.name}** ({width}x{height}) explained by `{model}` in "
            f"{time.perf_counter() - started:.2f} s: top-1 **{ranked[0].name}** ({ranked[0].score:.1%})."
        )
        truth = explained.truth
        if truth is not None:
            named = "" if truth.class_index is None else f"class **{explained.class_names[truth.class_index]}**"
            boxes = f"{len(truth.boxes)} box(es), in green" if len(truth.boxes) else ""
            status += f" Ground truth known: {', '.join(part for part in (named, boxes) if part)}."
        warning = outside_domain_note(domain_of(explained.info), ranked[0].score)
        if warning is not None:
            status += f"\n\n**Low score**: {warning}."
        for note in explained.notes:
            gr.Warning(note, title="Image converted")
            status += f"\n\nNote: {note}."
        choices = [(f"{c.name} ({c.score:.1%})", c.index) for c in ranked]
        top5 = {c.name: c.score for c in ranked[:5]}
        return (explained, gr.Dropdown(choices=choices, value=ranked[0].index), top5, *views, status)

    def choose_model(
        self, model: str, image: str | None, method: str, opacity: float, colormap: str
    ) -> tuple:
        """Another model: its description, its examples, its blocks, threshold and methods, and the image
        kept on the page explained again by it (with the picked method: refused by name where it cannot), at
        the threshold that method scores best with on the new model's validation images where it records one."""
        explorer = self.explorer(model)
        depth, threshold = explorer.depth, explorer.info.map_threshold(method)
        fits = [examples.fits(explorer.info.class_names) for examples in self.example_sets]
        return (
            describe_model(model, explorer),
            *(gr.Column(visible=fit) for fit in fits),
            DEFAULT_LAYER_MODE,
            gr.Slider(maximum=depth, value=depth),
            threshold,
            gr.Dropdown(choices=picker_choices(explorer.model), value=method),
            *self.analyze(image, model, DEFAULT_LAYER_MODE, depth, threshold, method, opacity, colormap),
        )

    @takes_session_controls
    def redraw(self, explained: ExplainedImage, settings: Settings) -> tuple:
        """Every view again from the cache: class, layers, method, opacity or colormap changed."""
        return self._views(explained, settings)

    @takes_session_controls
    def redraw_box(self, explained: ExplainedImage, settings: Settings) -> tuple:
        """Only the threshold changed: the maps and the gallery stay, the box moves."""
        return self._box_views(explained, settings)

    @takes_session_controls
    def compute_method(self, explained: ExplainedImage, settings: Settings) -> tuple:
        """The picked method's map of the selected class computed now (kept for this image: a second call
        computes nothing), then its box; and the line under the picker with the time it took."""
        try:
            explained.compute(settings)
        except ValueError as error:  # the model that explained the image is no longer loaded
            refuse(str(error), "method not computable", title="Cannot compute")
        return (*self._box_views(explained, settings), explained.method_status(settings)[0])

    def method_prompt(self, explained: ExplainedImage | None, chosen_class: Any, method: str) -> tuple:
        """The line under the picker (what the method costs) and the Compute button, shown while the
        picked method's map of the class is not computed. Nothing where the redraw reports a problem."""
        if explained is None:
            return "", gr.Button(visible=False)
        try:
            settings = explained.settings(method, class_index=find_class(explained.class_names, chosen_class))
        except (TypeError, ValueError):  # the redraw says what is wrong
            return "", gr.Button(visible=False)
        text, button = explained.method_status(settings)
        return text, gr.Button(button or "Compute", visible=button is not None)

    @takes_session_controls
    def export(self, explained: ExplainedImage, settings: Settings) -> list[str]:
        """The overlay as PNG and the boxes, scores and settings as JSON, as files to download."""
        try:
            result = explained.result(settings)
        except MapNotComputed as error:
            refuse(str(error), "export before computing", title="Nothing to export yet")
        folder = self._export_folder()
        stem = Path(explained.name).stem or "image"
        png, record = folder / f"{stem}-tscam.png", folder / f"{stem}-tscam.json"
        explained.render(settings, result).save(png)
        record.write_text(json.dumps(explained.export(settings, result), indent=2), encoding="utf-8")
        return [str(png), str(record)]

    def explain_image(
        self,
        image: str | None,
        model: str,
        chosen_class: Any = None,
        blocks: str = "all",
        threshold: float | None = None,
        method: str = "tscam",
    ) -> dict[str, Any]:
        """For scripts, no session: one image, the settings, and back the box, the scores and the
        maps (A*, S_c and M_c on the model's token grid, and a method computed on demand under its name,
        each 0..1) as JSON. ``blocks``: all, last:k or first:k; ``threshold``: None for the model's own."""
        if image is None:
            refuse("Give an image.", "explain_image without an image", title="No image")
        explorer = self.explorer(model)
        try:
            explained = explorer.explain(image)
        except ImageError as error:
            refuse(str(error), "unusable image")
        try:
            settings = explained.settings(
                method,
                blocks or "all",
                class_index=find_class(explained.class_names, chosen_class),
                threshold=explorer.info.default_threshold()[0] if threshold is None else float(threshold),
            )
        except (TypeError, ValueError) as error:
            refuse(str(error), "invalid setting", title="Invalid setting")
        explained.compute(settings)
        record = explained.export(settings)
        warning = outside_domain_note(domain_of(explained.info), explained.ranked_classes(1)[0].score)
        return {**record, "domain": domain_of(explained.info).describe(), "low_score_warning": warning,
                "maps": explained.map_grids(settings)}

    def _views(self, explained: ExplainedImage, settings: Settings) -> tuple:
        prediction, record = self._box_views(explained, settings)
        maps = explained.render_maps(settings)
        return prediction, maps["A*"], maps["S_c"], maps["M_c"], explained.layer_gallery(settings), record

    @staticmethod
    def _box_views(explained: ExplainedImage, settings: Settings) -> tuple:
        """The prediction and its record; neither while the picked method's map is not computed (the
        line under the picker says so, beside the Compute button)."""
        try:
            result = explained.result(settings)
        except MapNotComputed:
            return None, None
        return explained.render(settings, result), explained.export(settings, result)

    def _export_folder(self) -> Path:
        """A fresh folder per export; folders older than EXPORT_TTL_S go (Gradio has copied them by then)."""
        self.export_root.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for old in self.export_root.iterdir():
            if old.is_dir() and now - old.stat().st_mtime > EXPORT_TTL_S:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.export_root))


def build_demo(zoo: ModelZoo, example_sets: Sequence[ExampleSet] = ()) -> gr.Blocks:
    handlers = Handlers(zoo, example_sets)
    explorer = zoo.get(zoo.default)
    opening_map, opening_threshold, _ = explorer.info.best_map()
    depth = explorer.depth
    with gr.Blocks(title="TS-CAM explorer", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        gr.Markdown(
            "# TS-CAM explorer\nWhere does a vision transformer see the object, and what box does it draw? "
            "Pick a model, upload or paste an image, or pick an example."
        )
        with gr.Accordion("What am I looking at?", open=False, elem_id="about"):
            gr.Markdown(ABOUT)
        state = gr.State(None, time_to_live=STATE_TTL_S)
        with gr.Row():
            with gr.Column(scale=1):
                model_choice = gr.Dropdown(
                    zoo.labels,
                    value=zoo.default,
                    label="Model",
                    interactive=len(zoo.labels) > 1,
                    elem_id="model-choice",
                )
                model_info = gr.Markdown(describe_model(zoo.default, explorer), elem_id="model-info")
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
                example_columns = []
                for number, examples in enumerate(example_sets):
                    boxed = any(entry.get("boxes") for entry in examples.entries)
                    with gr.Column(
                        visible=examples.fits(explorer.info.class_names), elem_id=f"examples-{number}"
                    ) as column:
                        gr.Examples(
                            [[str(path)] for path in examples.files],
                            inputs=[image_input],
                            label="Examples" + (" (ground-truth box in green)" if boxed else ""),
                            examples_per_page=12,
                        )
                    example_columns.append(column)
                class_choice = class_by_name_or_index(
                    gr.Dropdown(label="Class", choices=[], value="", allow_custom_value=True, elem_id="class-choice")
                )
                method = gr.Dropdown(
                    picker_choices(explorer.model),
                    value=opening_map.variant,
                    label="Method: the map used for the box (and what it costs)",
                    elem_id="method",
                )
                method_status = gr.Markdown(elem_id="method-status")
                compute_button = gr.Button("Compute", visible=False, variant="primary", elem_id="compute-method")
                with gr.Row():
                    layer_mode = gr.Radio(
                        [(label, mode) for mode, label in LAYER_MODES.items()],
                        value=DEFAULT_LAYER_MODE,
                        label="Blocks in A*",
                        elem_id="layer-mode",
                    )
                    layer_count = gr.Slider(
                        1, depth, value=depth, step=1, label="k (number of blocks)", elem_id="layer-count"
                    )
                threshold = gr.Slider(
                    0.0,
                    1.0,
                    value=opening_threshold,
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
                status = gr.Markdown(elem_id="status")
                gr.Markdown("**Prediction**: the map, the predicted box (red) and the true box (green, examples).")
                prediction = gr.Image(
                    label="Prediction",
                    show_label=False,  # its badge would cover the box labels drawn in the image
                    format=VIEW_FORMAT,
                    interactive=False,
                    elem_id="prediction",
                )
                top5 = gr.Label(label="Top-5 classes", num_top_classes=5, elem_id="top5")
        with gr.Row(equal_height=False):
            map_views = [
                gr.Image(label=label, format=VIEW_FORMAT, interactive=False, elem_id=f"map-{key}")
                for key, label in (
                    ("attention", "A* (attention)"),
                    ("semantic", "S_c (semantic map)"),
                    ("coupled", "M_c = A* x S_c (TS-CAM)"),
                )
            ]
            gr.Markdown(SHORT_ABOUT, elem_id="short-about")
        gallery = gr.Gallery(
            label="Per-layer attention A^l (block number)",
            columns=6,
            # Not "auto": Gradio then gives the gallery a 450 px minimum, empty under one row of thumbnails.
            height="fit-content",
            format=VIEW_FORMAT,
            elem_id="layer-gallery",
        )
        with gr.Row():
            export_button = gr.Button("Export overlay PNG + JSON", elem_id="export")
            # Shown once there is something to download: empty, it is a tall blank box.
            export_files = gr.File(label="Downloads", file_count="multiple", interactive=False, visible=False)
        result_json = gr.JSON(label="Result (boxes in original-image pixels)", elem_id="result-json")
        # The stateless endpoint's own inputs and output, never shown: /explain_image is for scripts.
        with gr.Column(visible=False):
            api_image = uploads_only(gr.Image(type="filepath", image_mode=None, label="image"))
            api_blocks = gr.Textbox("all", label="blocks")
            api_threshold = gr.Number(None, label="threshold")
            api_result = gr.JSON(label="explanation")
            api_button = gr.Button("explain")

        controls = [layer_mode, layer_count, threshold, method, opacity, colormap]
        all_controls = [class_choice, *controls]
        views = [prediction, *map_views, gallery, result_json]
        analyzed = [state, class_choice, top5, *views, status]
        # The line under the picker and its Compute button follow every event that can change them; cheap,
        # so outside the concurrency group (it never waits behind a computation).
        prompt = {"fn": handlers.method_prompt, "inputs": [state, class_choice, method],
                  "outputs": [method_status, compute_button], "api_visibility": "private",
                  "concurrency_limit": None, "show_progress": "hidden"}
        image_input.change(
            handlers.analyze,
            [image_input, model_choice, *controls],
            analyzed,
            api_name="analyze",
            concurrency_id=CONCURRENCY_GROUP,
        ).then(**prompt)
        model_choice.input(
            handlers.choose_model,
            [model_choice, image_input, method, opacity, colormap],
            [model_info, *example_columns, layer_mode, layer_count, threshold, method, *analyzed],
            api_name="choose_model",
            concurrency_id=CONCURRENCY_GROUP,
        ).then(**prompt)
        # .input: only a visitor's moves redraw; a model switch sets the controls and redraws itself.
        gr.on(
            [
                class_choice.input,
                method.input,
                layer_mode.input,
                layer_count.input,
                opacity.input,
                colormap.input,
            ],
            handlers.redraw,
            [state, *all_controls],
            views,
            api_name="redraw",
            concurrency_id=CONCURRENCY_GROUP,
            trigger_mode="always_last",
            show_progress="hidden",
        ).then(**prompt)
        compute_button.click(
            handlers.compute_method,
            [state, *all_controls],
            [prediction, result_json, method_status],
            api_name="compute_method",
            concurrency_id=CONCURRENCY_GROUP,
        ).then(**prompt)
        threshold.input(
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
        ).success(lambda: gr.File(visible=True), None, export_files, api_visibility="private")
        api_button.click(
            handlers.explain_image,
            [api_image, model_choice, class_choice, api_blocks, api_threshold, method],
            api_result,
            api_name="explain_image",
            concurrency_id=CONCURRENCY_GROUP,
        )
    return demo


def make_loader(
    example_sets: Sequence[ExampleSet] = (), class_names_file: str | Path | None = None
) -> Callable[[str], Explorer]:
    """How the zoo turns a source into an explorer: the model, with names from ``class_names_file``
    where it has none of its own, and the examples of every set it fits."""

    def load(source: str) -> Explorer:
        model = load_model(source)
        if class_names_file is not None and not has_names(model.info):
            try:
                model.info.class_names = read_class_names(class_names_file, model.info.num_classes)
            except DatasetError as error:
                raise CheckpointError(f"{source}: {error}") from error
        if not has_names(model.info):
            log.warning("%s carries no class names: pass --class-names FILE (one name a line)", source)
        return Explorer(model, examples_for(model.info.class_names, example_sets), max_file_bytes=MAX_UPLOAD_BYTES)

    return load


def load_example_sets(folder: str | Path) -> list[ExampleSet]:
    """The example sets of ``folder``; a malformed one is a warning and no examples."""
    try:
        return read_example_sets(folder)
    except DatasetError as error:
        print(f"app.py: examples skipped: {error}", file=sys.stderr)
        return []


def examples_for(class_names: Sequence[str], example_sets: Sequence[ExampleSet]) -> list[Example]:
    """The examples of every set a model with ``class_names`` fits, their classes resolved for it."""
    return [
        example
        for examples in example_sets
        if examples.fits(class_names)
        for example in examples.examples(class_names)
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The TS-CAM explorer (Gradio).")
    parser.add_argument(
        "--checkpoint",
        nargs="+",
        default=None,
        help="one or several models for the picker (space- or comma-separated), the first shown first: a tscam "
        ".safetensors file, an "
        f"official TS-CAM release file, timm:NAME or hf://owner/repo/file (default: {MODELS_VARIABLE}, else "
        "the shipped checkpoint and, where the hub is reachable, an ImageNet DeiT-S)",
    )
    parser.add_argument(
        "--class-names",
        default=None,
        help="a text file of class names, one a line, for the models that carry none of their own",
    )
    parser.add_argument(
        "--examples", default=str(EXAMPLES_DIR), help="folder with examples.json, and subfolders with theirs"
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


def model_sources(checkpoints: Sequence[str] | None) -> list[str]:
    """--checkpoint, else TSCAM_MODELS, else the shipped checkpoint and the ImageNet DeiT-S where the hub
    answers."""
    if checkpoints:  # "a b" or "a,b", as TSCAM_MODELS lists them
        return [part.strip() for text in checkpoints for part in text.split(",") if part.strip()]
    listed = sources_from_environment()
    if listed:
        return listed
    sources, unreachable = default_sources(str(DEFAULT_CHECKPOINT))
    if unreachable:
        log.info("the ImageNet model is not offered: the Hugging Face Hub is unreachable (%s)", unreachable)
    return sources


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(args.log_level)
    sources = model_sources(args.checkpoint)
    example_sets = load_example_sets(args.examples)
    zoo = ModelZoo(sources, make_loader(example_sets, args.class_names))
    try:
        zoo.get(zoo.default)  # a default model that cannot load stops the app now, not at the first visitor
    except CheckpointError as error:
        hint = " (train it with `python train/run.py --preset fashion`)" if sources[0] == str(DEFAULT_CHECKPOINT) else ""
        sys.exit(f"app.py: {error}{hint}; pass another one with --checkpoint")
    demo = build_demo(zoo, example_sets)
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
