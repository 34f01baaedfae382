"""The evaluation's thumbnails: the top-1 class's map over the input, drawn into a staging folder that
replaces the results folder's old thumbnails only once every image is scored."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from ..overlay import GT_COLOR, PRED_COLOR, DrawnBox, blend
from ..results import PARTIAL_THUMBNAIL_DIR, THUMBNAIL_DIR, thumbnail_name
from ..transforms import Preprocess, resize

#: Thumbnail PNG encoding: Paeth filter, zlib level 1 with the run-length strategy. Same pixels as
#: any PNG; on map overlays about half the encoding time of Pillow's level 1, and smaller files.
PNG_OPTIONS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
               cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]


def draw_thumbnail(pixels: np.ndarray, image_id: str, gt_boxes: np.ndarray, cam01: np.ndarray,
                   pred_box: np.ndarray, side: int, folder: Path) -> str:
    """The map ``cam01`` over the input image ``pixels``, GT boxes green and the predicted box red,
    written into ``folder``; returns the file's name.

    Shrunk to ``side`` but never enlarged: an enlarged model input shows nothing more, and its
    encoding would cost several times as much (the dashboard scales pictures to fit).
    """
    height, width = pixels.shape[:2]
    scale = min(1.0, side / max(height, width))
    boxes = np.concatenate([gt_boxes.reshape(-1, 4), pred_box.reshape(1, 4)])
    if scale < 1.0:
        target = (max(1, round(height * scale)), max(1, round(width * scale)))
        small, boxes = resize(Image.fromarray(pixels), boxes, target)
        pixels = np.asarray(small)
    drawn = [DrawnBox(box, GT_COLOR) for box in boxes[:-1]] + [DrawnBox(boxes[-1], PRED_COLOR)]
    rgb = blend(pixels, cam01, drawn)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]), PNG_OPTIONS)
    if not ok:
        raise OSError(f"could not encode the thumbnail of {image_id}")
    name = thumbnail_name(image_id)
    (folder / name).write_bytes(encoded.tobytes())
    return name


def input_images(batch: torch.Tensor | np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """The model-input images back as B x H x W x 3 uint8, for thumbnails.

    In numpy, float32 step by step as torch would do it: a scoring thread must not queue
    small ops on torch's thread pool while the main thread runs the model on it.
    """
    pixels = np.asarray(batch, dtype=np.float32)
    mean = np.asarray(preprocess.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(preprocess.std, dtype=np.float32)[:, None, None]
    pixels = np.clip(np.round((pixels * std + mean) * np.float32(255)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


def stage_thumbnails(out: Path) -> Path:
    """A fresh staging folder for a run's thumbnails (a failed run's leftovers removed)."""
    staged = out / PARTIAL_THUMBNAIL_DIR
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    return staged


def discard_staged(out: Path) -> None:
    """A failed run's staged thumbnails removed, the folder's old ones kept."""
    shutil.rmtree(out / PARTIAL_THUMBNAIL_DIR, ignore_errors=True)


def replace_thumbnails(out: Path) -> None:
    """The staged thumbnails in place of the folder's old ones (an earlier run's, none of them kept)."""
    final, old = out / THUMBNAIL_DIR, out / f".{THUMBNAIL_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    (out / PARTIAL_THUMBNAIL_DIR).rename(final)
    shutil.rmtree(old, ignore_errors=True)
