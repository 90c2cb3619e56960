"""The shared preset table: one set of speed levels, (capability, family, level) -> (config, source), and a family
without presets borrows the reference family's with one warning per capability and family."""
from __future__ import annotations

import logging

import pytest

from dit_accel.accel import presets
from dit_accel.accel.caching import preset as block_cache_preset
from dit_accel.accel.caching.presets import CAPABILITY as BLOCK_CACHE
from dit_accel.accel.forecasting.presets import CAPABILITY as FORECAST
from dit_accel.accel.sparse.presets import CAPABILITY as SPARSE


def test_every_capability_offers_the_same_levels():
    from dit_accel.accel import caching, sparse
    from dit_accel.accel.forecasting import presets as forecast_presets
    assert caching.LEVELS is sparse.LEVELS is forecast_presets.LEVELS is presets.LEVELS


@pytest.mark.parametrize("capability", [BLOCK_CACHE, FORECAST, SPARSE])
def test_the_reference_family_has_its_own_measured_presets(capability, caplog):
    entry = presets.registered(capability)[presets.REFERENCE_FAMILY]
    assert entry.measured and entry.source
    with caplog.at_level(logging.WARNING, logger="dit_accel"):
        for level in presets.LEVELS:
            config, source = presets.lookup(capability, presets.REFERENCE_FAMILY, level)
            assert config is entry.configs[level] and source == entry.source
    assert not caplog.records


def test_a_family_without_presets_borrows_the_reference_ones_once_warned(caplog):
    presets.register("test-capability", "wan", dict.fromkeys(presets.LEVELS, "w"), "measured")
    presets.register("test-capability", "flux", dict.fromkeys(presets.LEVELS, "f"), "borrowed", measured=False)
    with caplog.at_level(logging.WARNING, logger="dit_accel"):
        assert presets.lookup("test-capability", "sd3", "fast") == ("w", "borrowed from wan: measured")
        assert presets.lookup("test-capability", "sd3", "quality")[0] == "w"
        assert presets.lookup("test-capability", "flux", "fast") == ("f", "borrowed")
        assert presets.lookup("test-capability", "flux", "balanced") == ("f", "borrowed")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "'sd3'" in messages[0] and "'flux'" in messages[1] and "custom" in messages[0]


def test_unmeasured_block_cache_families_keep_the_reference_values():
    assert block_cache_preset("flux", "fast") == block_cache_preset("wan", "fast")
    assert presets.registered(BLOCK_CACHE)["flux"].measured is False


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="speed must be one of"):
        presets.lookup(SPARSE, "wan", "turbo")
    with pytest.raises(KeyError, match="capabilities with presets: .*block-cache"):
        presets.lookup("no-such-capability", "wan", "fast")
    with pytest.raises(ValueError, match=r"lack the levels \['fast'\]"):
        presets.register("test-capability", "wan", {"quality": 1, "balanced": 2}, "x")
