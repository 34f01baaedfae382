"""tscam_core: TS-CAM (ICCV 2021) on any timm vision transformer with a class token.

    model = tscam_core.load_model("checkpoints/tscam_fashion.safetensors")
    image, explanation = tscam_core.explain_file(model, "photo.jpg")
    frame = model.info.transform
    result = tscam_core.localize(explanation, class_index, frame.input_size, threshold=0.1)
    box = frame.boxes_to_original(result.box, image.size)[0]  # in the image's own pixels
"""

__version__ = "0.1.0"

from .boxes import box_from_map, boxes_from_map, normalize_map, predict_box, upsample_map
from .checkpoint import FAMILY_LABELS, Family, ModelInfo, build_model, read_checkpoint, save_checkpoint
from .cnn_cam import CNNCAM, create_cnn_cam
from .errors import CheckpointError, DatasetError, ImageError, TSCAMError
from .explanation import (
    CAM_VARIANTS,
    VARIANT_LABELS,
    VARIANTS,
    Blocks,
    Explanation,
    MapSpec,
    Variant,
    select_layers,
    variants_for,
)
from .images import MAX_PIXELS, load_image
from .loading import load_model
from .localize import Localization, explain_file, explain_images, localize
from .model import TSCAM, create_tscam
from .overlay import COLORMAPS, DrawnBox, overlay
from .transforms import Preprocess

__all__ = [
    "CAM_VARIANTS", "CNNCAM", "Blocks", "COLORMAPS", "FAMILY_LABELS", "MAX_PIXELS", "TSCAM", "VARIANTS", "VARIANT_LABELS",
    "CheckpointError", "DatasetError", "DrawnBox", "Explanation", "Family", "ImageError",
    "Localization", "MapSpec", "ModelInfo", "Preprocess", "TSCAMError", "Variant", "__version__", "box_from_map",
    "boxes_from_map", "build_model", "create_cnn_cam", "create_tscam", "explain_file", "explain_images",
    "load_image", "load_model", "localize", "normalize_map", "overlay", "predict_box", "read_checkpoint",
    "save_checkpoint", "select_layers", "upsample_map", "variants_for",
]
