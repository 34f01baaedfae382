"""The models a visitor of the explorer can pick: sources, labels, lazy loading, a bounded cache.

A model is loaded on first use and kept while it is among the ``capacity`` most recently used,
so that a page listing several large models holds only a few in memory. Loading is serialised
per source: two sessions asking for the same new model load it once.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from .explorer import Explorer

#: Environment variable listing the sources (comma-separated, the first is the default).
MODELS_VARIABLE = "TSCAM_MODELS"
#: The ImageNet classifier offered beside the shipped checkpoint where the hub can be reached.
IMAGENET_MODEL = "timm:deit_small_patch16_224"
#: Models kept in memory at once (a DeiT-S takes about 90 MB; the shipped model 4 MB).
CAPACITY = 3


def sources_from_environment(environ: dict[str, str] | None = None) -> list[str]:
    """The sources ``TSCAM_MODELS`` lists, in order, blanks dropped (none where it is unset)."""
    text = (os.environ if environ is None else environ).get(MODELS_VARIABLE, "")
    return [part.strip() for part in text.split(",") if part.strip()]


def label_of(source: str) -> str:
    """What the picker shows for a source: a file's name (never the server's folders); timm: and
    hf:// sources as they are."""
    if source.startswith("timm:"):
        return source.partition("?")[0]
    return source if "://" in source else Path(source).name


class ModelZoo:
    """Sources by label, each turned into an :class:`Explorer` by ``build`` on first use."""

    def __init__(self, sources: Sequence[str], build: Callable[[str], Explorer], capacity: int = CAPACITY) -> None:
        if not sources:
            raise ValueError("no model to show: give at least one source")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        labels = [label_of(source) for source in sources]
        # Two files of one name in different folders: show their paths instead.
        self.sources = {
            (source if labels.count(label) > 1 else label): source for source, label in zip(sources, labels, strict=True)
        }
        self.build, self.capacity = build, capacity
        self._loaded: OrderedDict[str, Explorer] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {label: threading.Lock() for label in self.sources}

    @property
    def labels(self) -> list[str]:
        return list(self.sources)

    @property
    def default(self) -> str:
        return self.labels[0]

    def loaded(self) -> list[str]:
        """Labels of the models in memory, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def get(self, label: str) -> Explorer:
        """The explorer of the model ``label`` names, loaded now if it is not in memory.

        Raises KeyError for a label the zoo does not list; whatever ``build`` raises otherwise.
        """
        if label not in self.sources:
            raise KeyError(f"no model {label!r}; choose one of {', '.join(self.sources)}")
        with self._loading[label]:
            with self._lock:
                if label in self._loaded:
                    self._loaded.move_to_end(label)
                    return self._loaded[label]
            explorer = self.build(self.sources[label])
            with self._lock:
                self._loaded[label] = explorer
                while len(self._loaded) > self.capacity:
                    self._loaded.popitem(last=False)
            return explorer


def default_sources(shipped: str) -> tuple[list[str], str | None]:
    """The shipped checkpoint, and the ImageNet classifier where the hub can be reached; with the reason
    it is left out, if it is."""
    from .hub import unreachable_reason

    reason = unreachable_reason()
    return ([shipped] if reason else [shipped, IMAGENET_MODEL]), reason
