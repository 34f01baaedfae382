"""Dataset readers (CUB layout, ILSVRC) and the embedded Cluttered Fashion-MNIST benchmark.

    dataset = open_dataset("data/fashion-cluttered", split="test")
    image, sample = dataset.load(0)          # PIL RGB image, Sample with K x 4 boxes
    loader = DataLoader(TorchWSOL(dataset, Preprocess((224, 224), (224, 224))), collate_fn=collate)
"""

from .common import (
    Sample,
    TorchWSOL,
    TrainTransform,
    WSOLDataset,
    collate,
    load_mask,
    object_pixels,
    open_dataset,
)

__all__ = ["Sample", "TorchWSOL", "TrainTransform", "WSOLDataset", "collate", "load_mask", "object_pixels", "open_dataset"]
