"""Stage 1 of the fashion recipe: plain Fashion-MNIST classification, this benchmark's ImageNet.

The paper never trains TS-CAM from scratch: it fine-tunes a backbone pretrained on a large
classification set. Here the analogue is the 60,000 Fashion-MNIST items alone (no distractors),
drawn at a random scale, position and tint on smooth colour noise of random strength (from black to
as strong as the benchmark's), so the backbone learns garment shapes, and to tell them from a
coloured background, before it must find them among distractors. Small squares (4 x 4 tokens) make this stage cheap;
the model's position embeddings are resampled to that grid on the fly.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from .datasets.fashion import BenchmarkConfig, colour_noise, find_source, load_fashion_mnist
from .transforms import IMAGENET_MEAN, IMAGENET_STD


class PlainFashion(torch.utils.data.Dataset):
    """Fashion-MNIST items on black ``size`` x ``size`` squares; item ``i`` of epoch ``e`` depends on (seed, e, i) only."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, seed: int = 0, background: float = 1.0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.images = images
        self.labels = labels
        self.size = size
        self.seed = seed
        self.background = background
        self.epoch = 0
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    @classmethod
    def from_source(cls, source: str | None, size: int, count: int = 0, seed: int = 0,
                    background: float = 1.0) -> PlainFashion:
        """The Fashion-MNIST training split from ``source`` (default: Debian's copy), its first ``count`` items."""
        images, labels = load_fashion_mnist(find_source(source or None), "train")
        if count:
            images, labels = images[:count], labels[:count]
        return cls(images, labels, size, seed, background)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """Smooth colour noise at a random strength in [0, background]: from black to benchmark-like."""
        strength = rng.uniform(0, self.background)
        return (colour_noise(self.size, BenchmarkConfig.contrast, rng) * strength).astype(np.float32)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        side = int(rng.integers(int(0.6 * self.size), self.size + 1))
        item = cv2.resize(self.images[index], (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
        if rng.random() < 0.5:
            item = item[:, ::-1]
        canvas = self._background(rng)
        x, y = (int(v) for v in rng.integers(0, self.size - side + 1, 2))
        alpha = np.where(item > 0.1, np.clip(0.3 + 2 * item, 0, 1), 0)[..., None]
        shade = rng.uniform(0.3, 1.0, 3).astype(np.float32) * (0.35 + 0.65 * item[..., None])
        region = canvas[y:y + side, x:x + side]
        region[...] = region * (1 - alpha) + shade * alpha
        tensor = (torch.from_numpy(canvas).permute(2, 0, 1) - self.mean) / self.std
        return {"image": tensor, "label": int(self.labels[index]), "boxes": torch.tensor([[x, y, x + side, y + side]],
                dtype=torch.float32), "index": index, "size": torch.tensor([self.size, self.size])}


__all__ = ["PlainFashion"]
