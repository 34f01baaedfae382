"""The presets' choices that the embedded benchmark's study (issue #17) rests on."""

from __future__ import annotations

import pytest

from tscam_core.recipes import PRESETS, preset_config


@pytest.mark.parametrize("name", PRESETS)
def test_validation_sweeps_the_whole_cam_threshold_range(name):
    # A map's best threshold can lie anywhere: signed S_c scored best at 0.55, past the old sweep's 0.5.
    assert preset_config(name).thresholds() == [round(0.05 * k, 2) for k in range(1, 20)]
