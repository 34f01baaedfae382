"""CAM (Zhou et al., CVPR 2016) of a CNN CAM model (``tscam_core/cnn_cam.py``): its class maps, one forward pass."""

from __future__ import annotations

from ..explanation import MapSpec
from .registry import register
from .tscam import from_spec

register(from_spec(MapSpec("cam")))
