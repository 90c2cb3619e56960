"""Speed levels and the per-family presets of every capability: one table, (capability, family, level) -> (config,
source).

Each capability registers its presets from its own presets module (block cache: `accel/caching/presets.py`,
forecasting: `accel/forecasting/presets.py`, sparse attention: `accel/sparse/presets.py`); head guidance's presets
are head sets keyed by model shape, not by speed (`accel/guidance/presets.py`), and report their source the same way.
A family with no preset for a capability, or one marked not measured, gets the reference family's (the bundled
reference model is Wan 2.1 format) and a warning, once per capability and family: a usable default beats an error
on a supported model, but it is said to be borrowed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..kernels.logs import warn_once

LEVELS = ("quality", "balanced", "fast")  # the speed levels every node offers, slowest (closest to exact) first
REFERENCE_FAMILY = "wan"                   # the family of the reference model, where every preset was measured


@dataclass(frozen=True)
class FamilyPresets:
    configs: Mapping[str, Any]   # level -> the capability's config at that level
    source: str                  # where the values come from (a paper, a peer's code, our measurement)
    measured: bool = True        # False: values borrowed from the reference family until measured (warns)


_TABLE: dict[str, dict[str, FamilyPresets]] = {}


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"speed must be one of {LEVELS}, got {level!r}")
    return level


def register(capability: str, family: str, configs: Mapping[str, Any], source: str, measured: bool = True) -> None:
    """Add (or replace) one family's presets of one capability; every level must have one."""
    missing = [level for level in LEVELS if level not in configs]
    if missing:
        raise ValueError(f"{capability} presets for {family!r} lack the levels {missing}")
    _TABLE.setdefault(capability, {})[family] = FamilyPresets(dict(configs), source, measured)


def registered(capability: str) -> dict[str, FamilyPresets]:
    """The families with presets for `capability` (a copy)."""
    if capability not in _TABLE:
        raise KeyError(f"no presets registered for {capability!r}; capabilities with presets: "
                       f"{', '.join(sorted(_TABLE))}")
    return dict(_TABLE[capability])


def lookup(capability: str, family: str, level: str) -> tuple[Any, str]:
    """(config, source) of `capability` at `level` for `family`; the reference family's, with one warning per
    capability and family, where the family has none measured."""
    check_level(level)
    table = registered(capability)
    entry = table.get(family)
    if entry is None or not entry.measured:
        warn_once(f"preset-fallback:{capability}:{family}",
                  "dit-accel: no %s preset measured for %r yet; using the values measured on the reference "
                  "(Wan-format) model. Check the result, or use speed 'custom'.", capability, family)
    if entry is None:
        reference = table[REFERENCE_FAMILY]
        return reference.configs[level], f"borrowed from {REFERENCE_FAMILY}: {reference.source}"
    return entry.configs[level], entry.source
