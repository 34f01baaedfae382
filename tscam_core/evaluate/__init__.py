"""Evaluate a checkpoint on a WSOL dataset: one forward pass per batch, every metric from the cached maps.

    python -m tscam_core.evaluate --checkpoint checkpoints/tscam_fashion.safetensors \\
        --dataset data/fashion-cluttered --split test --out results/fashion

Frame: boxes and masks are scored in the model-input frame, as the paper does (test images resized
to 224 x 224 with their GT boxes scaled along, ``Preprocess.geometry``); each map is upsampled to the
input size by ``boxes.upsample_map``. The per-image table reports boxes in the original image
(``Preprocess.boxes_to_original``). With a center crop in the checkpoint's preprocessing, GT boxes
are clipped to the crop, as they would be in the official code.

Protocol: every default is the reference code's (``tscam_core.metrics`` and ``tscam_core.overlaps`` name each
convention and its source file): IoU counts box pixels inclusively; Top-1/Top-5 Loc need IoU > 0.5 and GT-known Loc
IoU >= 0.5 (TS-CAM ``lib/cams_deit.py``); Algorithm 1 judges Part and More on the GT box of highest IoU;
MaxBoxAccV2 and PxAP sweep ``np.arange(0, 1, 0.001)`` (wsolevaluation ``evaluation.py``).
``--box-convention half_open`` and ``--cam-curve-interval 0.01`` are options, recorded in
summary.json's settings.

One pass yields the main setting (``variant`` / ``layers``: the paper's five accuracies, Algorithm 1,
MaxBoxAccV2, PxAP where masks exist, the curves against the IoU and CAM thresholds), the three map
variants and every layer count 1..L, all from the same ``Explanation``.

``--method NAME`` (``EvalSettings.method``) scores a method of ``tscam_core.methods`` instead, through
the same scorer: one that is a map of the explanation (``tscam@last:4``, ``trans_cam``, ``cam``) exactly
as ``--variant`` / ``--layers`` name it; any other (``rollout``, ``chefer_generic``, ``gradcam``, ...)
runs on each batch for the GT and top-1 classes' maps, eagerly, beside the explain pass that ranks the
classes, and its summary has no variants and no layer counts. summary.json's ``settings.method``
records which.

The package, one concern a module: ``settings`` (``EvalSettings``, the pool's kind and size),
``scoring`` (the per-image protocol: the reference scorer ``score_image`` and the batched backend
``score_batch``, equal record for record, behind ``scoring.BACKEND``), ``maps`` (which maps of an
explanation are scored; the protocol over a data loader, for training's validation), ``summary``
(running totals, table rows, summary.json), ``thumbnails``, ``runner`` (the model thread, the
scoring pool, decoding ahead, niceness, numba warm-up) and ``cli`` (``python -m tscam_core.evaluate``).

For benchmarks and notebooks: ``evaluate(model, dataset, out, EvalSettings(...)) -> Results``.
"""

from .cli import main, parse_layers, report
from .maps import named_maps, score_loader
from .runner import evaluate
from .scoring import ImageMaps, ImageRecord, Protocol, score_batch, score_image, score_images
from .settings import PROCESS_POOL_CORES, THREAD_POOL_SIZE, EvalSettings, ScoringPool, usable_cores

__all__ = [
    "PROCESS_POOL_CORES", "THREAD_POOL_SIZE", "EvalSettings", "ImageMaps", "ImageRecord", "Protocol",
    "ScoringPool", "evaluate", "main", "named_maps", "parse_layers", "report", "score_batch", "score_image",
    "score_images", "score_loader", "usable_cores",
]
