"""The interactive explorer's logic, free of any UI: explain an image once, redraw from the cache.

Every control of the demo (class, layers, TS-CAM's map variants, threshold, opacity, colormap)
only changes what is drawn from one cached :class:`Explanation`: the model runs once per image.
The other methods of the picker (attention rollout, the gradient methods) run on demand, their
maps cached per (image, method, class): ``explorer_methods``. The Gradio demo (``app.py``) is a
thin view over this module; the dashboard's detail view can use it too.

Boxes follow the official protocol: the map is upsampled to the model's input frame, the
box is found there and mapped back to the original image (a pure scale for the paper's
resize-only test transform), so a box shown here is the box the evaluation scores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .boxes import as_numpy, normalize_map, upsample_map
from .checkpoint import PAPER_THRESHOLD, ModelInfo
from .errors import ImageError
from .evaluate.scoring import ImageMaps, Protocol, score_images
from .examples import Example, GroundTruth
from .explanation import DEFAULT_MAP, VARIANTS, Blocks, Explanation, MapSpec, Variant
from .explorer_methods import (
    ComputedMap,
    MapNotComputed,
    MethodRunner,
    OnDemandMaps,
    choose,
    compute_label,
    not_computed,
    status_text,
)
from .images import MAX_FILE_BYTES, conversion_notes, load_image, read_file
from .localize import explain_inputs
from .memory import RELEASE_PIXELS, release_freed_memory
from .methods import Method, get
from .model import TSCAM
from .overlay import COLORMAPS, GT_COLOR, PRED_COLOR, DrawnBox, overlay

#: Long side of the picture the maps are drawn on; the original is never kept (it may be 40 Mpx).
DISPLAY_SIDE = 448
#: Long side of each per-layer thumbnail.
THUMB_SIDE = 112
#: The three maps of the paper, by the variant whose map each one is (Table 5).
MAP_NAMES: dict[Variant, str] = {"trans_attention": "A*", "trans_cam": "S_c", "tscam": "M_c"}

@dataclass(frozen=True)
class Settings:
    """Everything a user can change; only a ``method`` outside the explanation needs a pass of its own."""

    class_index: int | None = None  # None: the top-1 class
    map: MapSpec = DEFAULT_MAP  # the map the box is drawn from, unless ``method``; the three maps shown share its blocks
    threshold: float = PAPER_THRESHOLD
    opacity: float = 0.5
    colormap: str = "jet"
    method: Method | None = None  # a method the explanation cannot give (rollout, gradients): the box's map

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"CAM threshold must be within 0..1, got {self.threshold}")
        if not 0.0 <= self.opacity <= 1.0:
            raise ValueError(f"opacity must be within 0..1, got {self.opacity}")
        if self.map.variant not in VARIANTS:
            raise ValueError(f"unknown map variant {self.map.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.colormap not in COLORMAPS:
            raise ValueError(f"unknown colormap {self.colormap!r}; choose one of {', '.join(COLORMAPS)}")
        if self.method is not None and self.method.spec is not None:
            raise ValueError(f"method {self.method.name!r} is a view of the explanation: give its spec as the map")

    def shown(self, variant: Variant) -> MapSpec:
        """The spec of ``variant``'s map as these settings show it (same blocks, same sign convention)."""
        return replace(self.map, variant=variant)


@dataclass(frozen=True)
class ClassScore:
    index: int
    name: str
    score: float


@dataclass(frozen=True)
class Result:
    """The box of one class's map under some settings, in original-image pixels."""

    class_index: int
    class_name: str
    score: float
    box: np.ndarray
    iou: float | None  # against the best-matching GT box, where GT is known (model-input frame, as evaluated)


def fit_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) scaled so that the long side is ``side``, aspect kept."""
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass
class ExplainedImage:
    """One explained image: the per-session cache every redraw works from.

    Holds a display-sized copy of the image, its layer thumbnails, the explanation and the image
    at the model's input size (for the methods run on demand), never the original pixels (up to
    40 Mpx), so that many sessions fit in memory.
    """

    name: str
    size: tuple[int, int]  # original (width, height)
    display: Image.Image
    explanation: Explanation
    info: ModelInfo
    truth: GroundTruth | None = None
    notes: tuple[str, ...] = ()  # how the upload was converted (first frame, 16-bit, CMYK, ...)
    offered: tuple[Method, ...] = ()  # the methods the model can give (``methods.available``)
    on_demand: OnDemandMaps | None = field(default=None, repr=False)  # the other methods' maps, computed on demand
    # Caches, each replaced whole (one assignment) so that two events of one session never mix keys:
    # (class, layers) -> maps by variant; (colormap, opacity) -> layer thumbnails.
    _cams: tuple[int | None, dict[MapSpec, Tensor]] = field(default_factory=lambda: (None, {}), repr=False)
    _gallery: tuple[Any, list[Image.Image]] = field(default_factory=lambda: (None, []), repr=False)

    @classmethod
    def create(
        cls,
        image: Image.Image,
        explanation: Explanation,
        info: ModelInfo,
        name: str = "image",
        truth: GroundTruth | None = None,
        notes: Sequence[str] = (),
        model_input: Image.Image | None = None,
        runner: MethodRunner | None = None,
    ) -> ExplainedImage:
        """Without a ``runner`` (no model), only the explanation's own maps can be drawn."""
        display = image.resize(fit_size(image.width, image.height, DISPLAY_SIDE), Image.BILINEAR)
        model_input = info.transform.geometry(image)[0] if model_input is None else model_input
        offered = runner.offered if runner is not None else tuple(get(variant) for variant in explanation.variants)
        return cls(name, image.size, display, explanation.select(0), info, truth, tuple(notes), offered,
                   OnDemandMaps(model_input, runner))

    # --- classes -------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self.explanation.depth

    @property
    def class_names(self) -> list[str]:
        return self.info.class_names

    def ranked_classes(self, k: int | None = None) -> list[ClassScore]:
        """Classes by decreasing score (all of them, or the best k)."""
        scores, indices = self.explanation.top_classes(k or self.explanation.logits.shape[1])
        return [
            ClassScore(int(i), self.class_names[int(i)], float(s))
            for s, i in zip(scores[0], indices[0], strict=True)
        ]

    def class_index(self, settings: Settings) -> int:
        if settings.class_index is None:
            return int(self.explanation.logits[0].argmax())
        count = len(self.class_names)
        if not 0 <= settings.class_index < count:
            raise ValueError(f"class index {settings.class_index} is outside 0..{count - 1}")
        return int(settings.class_index)

    def check(self, settings: Settings) -> Settings:
        """``settings`` if its class, layer count and method fit this model, else a ValueError saying why."""
        self.class_index(settings)
        settings.map.check(self.depth)
        choose(self.offered, settings.map.variant if settings.method is None else settings.method.name)
        return settings

    def settings(self, method: str, blocks: Blocks = "all", **values: Any) -> Settings:
        """The checked settings of the picker's ``method`` (a name of ``offered``), ``blocks`` for A* and
        the other controls' ``values``: a view of the explanation goes in the map, any other method
        beside it."""
        chosen = choose(self.offered, method)
        spec = replace(chosen.spec or DEFAULT_MAP, blocks=blocks)
        return self.check(Settings(map=spec, method=None if chosen.spec else chosen, **values))

    # --- maps and boxes ------------------------------------------------------------------
    def cam(self, spec: MapSpec, settings: Settings) -> Tensor:
        """The h x w map ``spec`` names for the selected class (cached: thresholds and redraws reuse it)."""
        index = self.class_index(settings)
        cached_index, cams = self._cams
        if cached_index != index:
            cams = {}
            self._cams = (index, cams)
        if spec not in cams:
            cams[spec] = self.explanation.maps(spec, torch.tensor([[index]]))[0, 0]
        return cams[spec]

    def computed(self, settings: Settings) -> ComputedMap | None:
        """The map of ``settings.method`` for the selected class, if it has been computed."""
        if settings.method is None or self.on_demand is None:
            return None
        return self.on_demand.get(settings.method, self.class_index(settings))

    def compute(self, settings: Settings) -> ComputedMap | None:
        """The map of ``settings.method`` for the selected class, computed now unless it is cached; None
        where the box's map is a view of the explanation."""
        if settings.method is None:
            return None
        if self.on_demand is None:
            raise ValueError(f"nothing can compute {settings.method.name!r} for this image: it has no model input")
        return self.on_demand.compute(settings.method, self.class_index(settings))

    def box_map(self, settings: Settings) -> Tensor:
        """The map the box is drawn from: a view of the explanation, or the method's computed map
        (a MapNotComputed error, saying how to compute it, where it is not yet)."""
        if settings.method is None:
            return self.cam(settings.map, settings)
        computed = self.computed(settings)
        if computed is None:
            raise MapNotComputed(not_computed(settings.method, self.class_names[self.class_index(settings)]))
        return computed.map

    def method_status(self, settings: Settings) -> tuple[str, str | None]:
        """The picker's line (the method's cost, and its compute time once computed) and the compute
        button's text, None when there is nothing to compute."""
        method = settings.method or get(settings.map.variant)
        computed = self.computed(settings)
        class_name = self.class_names[self.class_index(settings)]
        button = None if settings.method is None or computed is not None else compute_label(method)
        return status_text(method, class_name, computed), button

    def result(self, settings: Settings) -> Result:
        """The box of the selected class's map by the evaluation's scorer, in original pixels, and its
        IoU with the GT boxes where known, scored as the evaluation scores it (in the model-input frame)."""
        transform = self.info.transform
        index = self.class_index(settings)
        cam = as_numpy(self.box_map(settings))
        truth = np.zeros((0, 4), np.float32) if self.truth is None else self.truth.boxes
        record = score_images([ImageMaps(np.stack([cam, cam]), index, [index], transform.boxes_to_input(truth, self.size))],
                              Protocol(tuple(transform.input_size), settings.threshold))[0]
        box = transform.boxes_to_original(record.gt_known_box, self.size)[0]
        score = float(self.explanation.probabilities()[0, index])
        return Result(index, self.class_names[index], score, box, record.gt_known_iou if len(truth) else None)

    def _map_region(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """Where the model's input frame lies in a picture of ``size`` = (width, height)."""
        transform = self.info.transform
        height, width = transform.input_size
        region = transform.boxes_to_original(np.array([[0, 0, width, height]], np.float32), self.size)[0]
        scale = np.array([size[0] / self.size[0], size[1] / self.size[1]] * 2)
        x0, y0, x1, y1 = (int(round(v)) for v in region * scale)
        return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)

    def _heat(self, cam: Tensor, size: tuple[int, int]) -> Tensor | np.ndarray:
        """``cam`` as ``overlay`` should draw it on a (width, height) picture: as it is where the
        model saw the whole image (overlay upsamples it), else upsampled into the model's input
        frame (a center crop) and zero outside it."""
        x0, y0, x1, y1 = self._map_region(size)
        if (x0, y0, x1, y1) == (0, 0, size[0], size[1]):
            return cam
        placed = np.zeros((size[1], size[0]), np.float32)
        placed[y0:y1, x0:x1] = upsample_map(cam, (y1 - y0, x1 - x0))
        return placed

    def _to_display(self, box: Sequence[float]) -> np.ndarray:
        scale = np.array([self.display.width / self.size[0], self.display.height / self.size[1]] * 2)
        return np.asarray(box, np.float64) * scale

    def render(self, settings: Settings, result: Result | None = None) -> Image.Image:
        """The selected variant's map over the image, with the predicted box and the GT boxes."""
        result = result or self.result(settings)
        drawn = []
        if self.truth is not None:
            drawn += [DrawnBox(self._to_display(b), GT_COLOR, "GT", "bottom") for b in self.truth.boxes]
        label = f"{result.class_name} {result.score:.0%}" + (
            "" if result.iou is None else f" IoU {result.iou:.2f}"
        )
        drawn.append(DrawnBox(self._to_display(result.box), PRED_COLOR, label))
        heat = self._heat(self.box_map(settings), self.display.size)
        return overlay(self.display, heat, drawn, settings.colormap, settings.opacity)

    def render_maps(self, settings: Settings) -> dict[str, Image.Image]:
        """A*, S_c and M_c of the selected class and layers, each over the image."""
        return {
            name: overlay(
                self.display,
                self._heat(self.cam(settings.shown(variant), settings), self.display.size),
                colormap=settings.colormap,
                alpha=settings.opacity,
            )
            for variant, name in MAP_NAMES.items()
        }

    def map_grids(self, settings: Settings, digits: int = 4) -> dict[str, list[list[float]]]:
        """A*, S_c and M_c of the selected class and blocks on the model's token grid (h x w, each scaled
        to 0..1), and the computed map of ``settings.method`` at its own size, as nested lists for JSON."""
        maps = {name: self.cam(settings.shown(variant), settings) for variant, name in MAP_NAMES.items()}
        if settings.method is not None:
            maps[settings.method.name] = self.box_map(settings)
        return {name: np.round(normalize_map(cam), digits).tolist() for name, cam in maps.items()}

    def layer_gallery(self, settings: Settings) -> list[tuple[Image.Image, str]]:
        """Each block's class-token attention A^l over a thumbnail, captioned with its block number.

        The pictures depend only on colormap and opacity, so they are cached: a change of
        threshold, class or layer selection only rewrites the captions.
        """
        key = (settings.colormap, settings.opacity)
        cached_key, pictures = self._gallery
        if cached_key != key:
            thumb = self.display.resize(fit_size(*self.display.size, THUMB_SIDE), Image.BILINEAR)
            attention = self.explanation.layer_attention[0]
            pictures = [
                overlay(thumb, self._heat(attention[block], thumb.size), colormap=key[0], alpha=key[1])
                for block in range(self.depth)
            ]
            self._gallery = (key, pictures)
        chosen = set(settings.map.indices(self.depth))
        return [
            (picture, f"block {block + 1}" + (" · in A*" if block in chosen else ""))
            for block, picture in enumerate(pictures)
        ]

    # --- export --------------------------------------------------------------------------
    def export(self, settings: Settings, result: Result | None = None) -> dict[str, Any]:
        """A JSON-ready record of the boxes, the scores and the settings that made them."""
        result = result or self.result(settings)
        method = settings.method or get(settings.map.variant)
        truth = None
        if self.truth is not None:
            truth = {
                "class_index": self.truth.class_index,
                "class_name": None
                if self.truth.class_index is None
                else self.class_names[self.truth.class_index],
                "boxes": [[round(float(v), 2) for v in b] for b in self.truth.boxes],
                "iou": None if result.iou is None else round(result.iou, 4),
            }
        return {
            "image": {"name": self.name, "width": self.size[0], "height": self.size[1]},
            "model": {
                "arch": self.info.arch,
                "source": _public_source(self.info.source),
                "num_classes": len(self.class_names),
            },
            "settings": {
                "class_index": result.class_index,
                "method": method.name,
                "method_label": method.label,
                "method_cost": method.cost,
                "map": settings.map.key if settings.method is None else method.name,
                "variant": None if settings.method else settings.map.variant,
                "variant_label": None if settings.method else settings.map.label,
                "blocks": [b + 1 for b in settings.map.indices(self.depth)],
                "signed_class_maps": settings.map.signed,
                "threshold": settings.threshold,
                "opacity": settings.opacity,
                "colormap": settings.colormap,
            },
            "prediction": {
                "class_index": result.class_index,
                "class_name": result.class_name,
                "score": round(result.score, 6),
                "box": [round(float(v), 2) for v in result.box],
            },
            "top5": [
                {"class_index": c.index, "class_name": c.name, "score": round(c.score, 6)}
                for c in self.ranked_classes(5)
            ],
            "ground_truth": truth,
            "box_format": "[x0, y0, x1, y1] in original-image pixels, half-open extents",
        }


def _public_source(source: str) -> str:
    """A checkpoint's source without the server's directories (a file's name, also in timm:NAME?file=;
    hf:// as it is)."""
    if source.startswith("timm:"):
        name, _, weights = source.partition("?file=")
        return f"{name}?file={Path(weights).name}" if weights else name
    return source if "://" in source else Path(source).name


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Explorer:
    """A model and its examples; turns uploads into :class:`ExplainedImage` caches.

    Safe to share between sessions: TSCAM.explain records only its own thread's attention, and the
    gradient methods run on the runner's private copy of the model.
    """

    def __init__(
        self, model: TSCAM, examples: Sequence[Example] = (), max_file_bytes: int = MAX_FILE_BYTES
    ) -> None:
        if not isinstance(model, TSCAM):
            raise TypeError(f"the explorer shows a transformer's attention maps; {type(model).__name__} is not a "
                            "TS-CAM model (load CNN CAM checkpoints with tscam_core.evaluate instead)")
        self.model = model
        self.info: ModelInfo = model.info
        self.runner = MethodRunner(model)  # the methods the explanation cannot give, on demand
        self.examples = list(examples)
        self.max_file_bytes = max_file_bytes
        self._truths = {digest(example.path.read_bytes()): example.truth for example in self.examples}

    @property
    def depth(self) -> int:
        return self.model.depth

    def explain(self, source: str | Path | bytes, name: str | None = None) -> ExplainedImage:
        """Load any image source safely (raising ImageError), explain it, attach its GT if it is an example."""
        if isinstance(source, (str, Path)):
            data, name = read_file(source, self.max_file_bytes), name or Path(source).name
        else:
            data = bytes(source)
        name = name or "image"
        try:
            image = load_image(data)
        except ImageError as error:
            release_freed_memory()  # a damaged file may have been decoded in part first
            raise ImageError(f"{name}: {error}") from error
        model_input = self.info.transform.geometry(image)[0]
        explanation = explain_inputs(self.model, [model_input])
        explained = ExplainedImage.create(image, explanation, self.info, name, self._truths.get(digest(data)),
                                          conversion_notes(data), model_input, self.runner)
        if image.width * image.height >= RELEASE_PIXELS:  # a server keeps only the display-sized copy
            del image, data
            release_freed_memory()
        return explained
