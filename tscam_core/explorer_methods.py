"""The explorer's method picker: what a model offers, what each method costs, and the maps a cached
explanation cannot give, computed on demand.

TS-CAM and its Table 5 variants are views of the explanation the explorer caches per image:
picking one redraws at once. Attention rollout needs a forward pass of its own and the gradient
methods (Chefer et al.'s, pytorch-grad-cam's family) a forward and a backward pass per class, so
the explorer computes their maps only when asked, once per (image, method, class).

pytorch-grad-cam registers hooks on the model it explains, and they record every pass through
it, any thread's: the gradient methods run on a private copy of the model, one per loaded model,
made on first use and used by one computation at a time (a lock). The shared model keeps
serving every session's forward passes; its own hooks record per thread (``TSCAM.watch``).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor, nn

from . import methods
from .checkpoint import build_model
from .errors import TSCAMError
from .localize import input_batch
from .methods import COST_LABELS, NEED_LABELS, Method

#: What picking a view of the cached explanation costs: nothing more.
FROM_THE_CACHE = "drawn from the image's pass"
#: Computed maps an image keeps, the oldest dropped first: a gradient map at the input size is 200 KB
#: at 224 x 224, and a visitor may compute many classes.
MAX_COMPUTED = 16


class MapNotComputed(TSCAMError, ValueError):
    """The picked method's map of this class is not computed yet: the message says how to compute it."""


@dataclass(frozen=True)
class ComputedMap:
    """One method's map of one class, and the seconds its computation took."""

    map: Tensor  # h x w: the token grid, or the input size for pytorch-grad-cam's methods
    seconds: float


def cost_text(method: Method) -> str:
    """What picking ``method`` costs in the explorer: nothing for a view of the cached explanation."""
    return FROM_THE_CACHE if method.spec is not None else COST_LABELS[method.cost]


def short_name(method: Method) -> str:
    """The method's name without its citation: ``GradCAM``, ``Attention rollout``, ``TS-CAM``."""
    return method.label.partition(" (")[0]


def picker_choices(model: nn.Module) -> list[tuple[str, str]]:
    """(label with its cost, name) of every method ``model`` can give, in ``methods.available``'s order."""
    return [(f"{method.label} · {cost_text(method)}", method.name) for method in methods.available(model)]


def compute_label(method: Method) -> str:
    """The text of the button that computes ``method``'s map."""
    return f"Compute {short_name(method)} ({COST_LABELS[method.cost]})"


def choose(offered: Sequence[Method], name: str) -> Method:
    """The method called ``name`` among those a model ``offered``; a ValueError says why another is not."""
    for method in offered:
        if method.name == name:
            return method
    choices = ", ".join(method.name for method in offered)
    if name in methods.names():
        needs = " and ".join(NEED_LABELS[need] for need in sorted(methods.get(name).needs))
        raise ValueError(f"method {name!r} needs {needs}, which this model does not have; choose one of {choices}")
    raise ValueError(f"unknown method {name!r}; choose one of {choices}")


def not_computed(method: Method, class_name: str) -> str:
    """What a view that needs ``method``'s map of a class says while it is not computed."""
    return (f"the {method.name} map of class {class_name!r} is not computed yet: press "
            f"'{compute_label(method)}' (API: call /compute_method with the same settings)")


def status_text(method: Method, class_name: str, computed: ComputedMap | None) -> str:
    """One line under the picker: what the method costs and, for one computed on demand, whether its map
    of the class is there and how long it took."""
    name = f"**{short_name(method)}**"
    if method.spec is not None:
        return f"{name}: {FROM_THE_CACHE}, no new one."
    if computed is None:
        return f"{name} of *{class_name}*: not computed yet; it costs {COST_LABELS[method.cost]}."
    took = f"{computed.seconds:.2f} s" if computed.seconds >= 0.1 else f"{computed.seconds * 1000:.1f} ms"
    return f"{name} of *{class_name}*: computed in {took} ({COST_LABELS[method.cost]})."


class MethodRunner:
    """Runs a model's methods on an image on demand: the forward ones on the shared model, the gradient
    ones on the model's private copy, one at a time."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.offered = methods.available(model)
        self._copy: nn.Module | None = None
        self._lock = threading.Lock()

    def run(self, method: Method, model_input: Image.Image, class_index: int) -> ComputedMap:
        """``method``'s map of ``class_index`` for an image in the model's input frame (uint8, as
        ``Preprocess.geometry`` gives it), timed without the wait for the lock."""
        choose(self.offered, method.name)  # a method this model cannot give is refused by name
        if not method.gradients:
            return _timed(method, self.model, model_input, class_index)
        with self._lock:
            return _timed(method, self._private_copy(), model_input, class_index)

    def gradient_model(self) -> nn.Module:
        """The private copy the gradient methods run on, made now if it is not yet."""
        with self._lock:
            return self._private_copy()

    def _private_copy(self) -> nn.Module:
        # Rebuilt from its description and weights, not deep-copied: a deep copy would also copy the
        # hooks other threads have on the shared model at that moment (and could see them change).
        if self._copy is None:
            first = next(self.model.parameters())
            copy = build_model(self.model.info)
            copy.load_state_dict(self.model.state_dict())
            self._copy = copy.to(device=first.device, dtype=first.dtype).eval().requires_grad_(False)
        return self._copy


def _timed(method: Method, model: nn.Module, model_input: Image.Image, class_index: int) -> ComputedMap:
    started = time.perf_counter()
    maps = method(model, input_batch(model, [model_input]), torch.tensor([[class_index]]))
    return ComputedMap(maps[0, 0].cpu(), time.perf_counter() - started)


class OnDemandMaps:
    """One image's maps of the methods run on demand, by (method, class), and what computes them: the
    image in the model's input frame and the model's runner, held weakly so that a session keeps no
    model in memory that the zoo has let go."""

    def __init__(self, model_input: Image.Image, runner: MethodRunner | None) -> None:
        self.model_input = model_input
        self._runner = None if runner is None else weakref.ref(runner)
        # Replaced whole (one assignment): two events of one session never see a half-made dict.
        self._maps: dict[tuple[str, int], ComputedMap] = {}

    def get(self, method: Method, class_index: int) -> ComputedMap | None:
        return self._maps.get((method.name, class_index))

    def compute(self, method: Method, class_index: int) -> ComputedMap:
        """The map, computed now unless it is kept; the oldest of MAX_COMPUTED maps goes."""
        key = (method.name, class_index)
        if key in self._maps:
            return self._maps[key]
        runner = None if self._runner is None else self._runner()
        if runner is None:
            raise ValueError(f"no model to compute {method.name!r} with: the Explorer that explained this image is "
                             "gone (the demo lets go of models nobody picked lately); keep the Explorer, or explain "
                             "the image again")
        computed = runner.run(method, self.model_input, class_index)
        kept = list(self._maps.items())[-(MAX_COMPUTED - 1):]
        self._maps = {**dict(kept), key: computed}
        return computed
