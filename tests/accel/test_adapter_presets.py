"""The per-family presets table: one entry per served family, matching its adapter, every number with a source."""
from __future__ import annotations

import pytest

from dit_accel.accel.adapters.registry import _ADAPTERS, supported_families
from dit_accel.accel.adapters.presets import PRESETS, FamilyPreset, family_preset


def test_every_served_family_has_a_preset_and_no_more():
    assert sorted(PRESETS) == supported_families()


@pytest.mark.parametrize("family", sorted(PRESETS))
def test_preset_block_kinds_are_the_adapters(family):
    supported_families()
    assert PRESETS[family].block_kinds == tuple(k.kind for k in _ADAPTERS[family].block_kinds)


def test_a_number_without_a_source_is_refused():
    with pytest.raises(ValueError, match=r"no source for \['steps'\]"):
        FamilyPreset("x", ("block",), "self", "any", 1, 20, None, 1.0, False,
                     sources={"always_compute_first": "a", "cache_threshold": "b"})
    with pytest.raises(ValueError, match="distilled_steps must be below steps"):
        FamilyPreset("x", ("block",), "self", "any", 1, 4, 8, 1.0, False,
                     sources={"always_compute_first": "a", "steps": "b", "distilled_steps": "c",
                              "cache_threshold": "d"})


def test_only_measured_thresholds_claim_our_measurement():
    for preset in PRESETS.values():
        assert preset.measured == preset.sources["cache_threshold"].startswith("our measurement")


def test_unknown_family_names_the_known_ones():
    with pytest.raises(KeyError, match="families with presets: .*wan"):
        family_preset("no_such_family")
