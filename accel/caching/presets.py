"""Block-cache presets per model family: the one quality <-> speed knob most users need.

Measured on the reference model (Wan 2.1 format, 20 Euler steps, shift 8, CFG 4; bench, 20 images), all with the
block gate at threshold 1.0 and a second-order Taylor forecast of each skipped block's residual:
  quality   at most 1 forecast step in a row   1.81x compute, PSNR 50.0 dB, class accuracy 1.00
  balanced  at most 2 forecast steps in a row  2.48x compute, PSNR 36.5 dB, class accuracy 1.00
  fast      at most 3 forecast steps in a row  2.94x compute, PSNR 27.1 dB, class accuracy 1.00
Plain reuse of the residual (forecast_order 0) gives 1.81x at 37.6 dB and 2.48x at 31.8 dB; first order 44.3 and
33.5 dB; third order overshoots (31.4 dB at 2.48x). Evenly spread computes beat bunched ones, and the final step must
always be computed (skipping it costs 5 dB), so every preset keeps warm-up and final steps.
"""
from __future__ import annotations

import logging

from .block_cache import BlockCacheConfig

log = logging.getLogger("dit_accel")
FALLBACK_FAMILY = "wan"  # the only family measured so far (through the reference model)

LEVELS = ("quality", "balanced", "fast")

_WAN = {
    "quality": BlockCacheConfig(gate="block", threshold=1.0, max_consecutive=1, forecast_order=2),
    "balanced": BlockCacheConfig(gate="block", threshold=1.0, max_consecutive=2, forecast_order=2),
    "fast": BlockCacheConfig(gate="block", threshold=1.0, max_consecutive=3, forecast_order=2),
}

FAMILY_PRESETS: dict[str, dict[str, BlockCacheConfig]] = {"wan": _WAN}


def preset(family: str, level: str = "balanced") -> BlockCacheConfig:
    if level not in LEVELS:
        raise ValueError(f"speed must be one of {LEVELS}, got {level!r}")
    if family not in FAMILY_PRESETS:
        # A usable default beats an error on a supported model, but say that it is borrowed.
        log.warning("dit-accel: no block-cache preset measured for %r yet; using the %s preset measured on the "
                    "reference (Wan-format) model. Check the result, or use speed 'custom'.", family, level)
        family = FALLBACK_FAMILY
    return FAMILY_PRESETS[family][level]
