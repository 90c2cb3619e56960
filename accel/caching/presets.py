"""Block-cache presets per model family: the one quality <-> speed knob most users need.

Measured on the reference model (Wan 2.1 format, 20 Euler steps, shift 8, CFG 4; bench), all with the block gate at
threshold 1.0 and a second-order Taylor forecast of each skipped block's residual on the scheduler's step axis:
  quality   at most 2 forecast steps in a row  2.50x blocks, PSNR 43.2 dB (2 seeds)
  balanced  at most 3 forecast steps in a row  3.27x blocks, PSNR 36.9 dB (2 seeds)
  fast      at most 4 forecast steps in a row  see the README table
Forecasting on the step axis instead of sigma is worth 6-10 dB here: with shift 8 the last four of 20 steps carry
two thirds of the sigma drop, and residuals move evenly in steps, not in sigma (2.5x: 43.2 dB vs 36.5 dB on sigma).
Plain reuse of the residual (forecast_order 0, sigma axis) gave 1.81x at 37.6 dB and 2.48x at 31.8 dB. Evenly spread
computes beat bunched ones, and the final step must always be computed (skipping it costs 5 dB), so every preset
keeps warm-up and final steps.
"""
from __future__ import annotations

import dataclasses
import logging

from ..family_presets import PRESETS
from .block_cache import BlockCacheConfig

log = logging.getLogger("dit_accel")
FALLBACK_FAMILY = "wan"  # the only family measured so far (through the reference model)

LEVELS = ("quality", "balanced", "fast")

_WAN = {
    level: BlockCacheConfig(gate="block", threshold=1.0, max_consecutive=consecutive, forecast_order=2)
    for level, consecutive in (("quality", 2), ("balanced", 3), ("fast", 4))
}

FAMILY_PRESETS: dict[str, dict[str, BlockCacheConfig]] = {"wan": _WAN}


def preset(family: str, level: str = "balanced") -> BlockCacheConfig:
    """The block-cache setting for a family and speed level; the family's threshold comes from the per-family
    table (accel/family_presets.py), the skip pattern from the measured presets here."""
    if level not in LEVELS:
        raise ValueError(f"speed must be one of {LEVELS}, got {level!r}")
    config = FAMILY_PRESETS.get(family, FAMILY_PRESETS[FALLBACK_FAMILY])[level]
    table = PRESETS.get(family)
    if family not in FAMILY_PRESETS or (table is not None and not table.measured):
        # A usable default beats an error on a supported model, but say that it is borrowed.
        log.warning("dit-accel: no block-cache preset measured for %r yet; using the %s preset measured on the "
                    "reference (Wan-format) model. Check the result, or use speed 'custom'.", family, level)
    return dataclasses.replace(config, threshold=table.cache_threshold) if table is not None else config
