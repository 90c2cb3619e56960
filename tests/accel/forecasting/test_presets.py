"""Per-family speed levels of DiT Forecast: sourced, ordered, and a clear fallback for families without one."""
from __future__ import annotations

import logging

import pytest

from dit_accel.accel.adapters.registry import supported_families
from dit_accel.accel.forecasting import presets
from dit_accel.accel.forecasting.presets import LEVELS, PRESETS, forecast_preset


def test_every_preset_names_its_sources_and_a_known_family():
    families = set(supported_families())
    for family, preset in PRESETS.items():
        assert family in families and preset.family == family
        assert preset.sources["balanced_interval"] and preset.sources["warmup_steps"]


@pytest.mark.parametrize("family", sorted(PRESETS))
def test_levels_trade_quality_for_speed_in_order(family):
    intervals = [forecast_preset(family).interval(level) for level in LEVELS]
    assert intervals == sorted(intervals) and len(set(intervals)) == len(LEVELS) and intervals[0] >= 1


def test_reference_family_keeps_the_measured_levels():
    wan = forecast_preset("wan")
    assert [wan.interval(level) for level in LEVELS] == [3, 5, 7] and wan.warmup_steps == 1


def test_unknown_family_borrows_the_reference_levels_and_says_so_once(caplog):
    with caplog.at_level(logging.WARNING, logger="dit_accel"):
        first, second = forecast_preset("sd3"), forecast_preset("sd3")
    assert first is second is presets.PRESETS["wan"]
    assert caplog.text.count("no forecast preset") == 1 and "custom" in caplog.text
    with pytest.raises(ValueError, match="speed must be"):
        first.interval("turbo")
