"""Block-cache presets per model family: the one quality <-> speed knob most users need.

Measured on the reference model (Wan 2.1 format, 20 Euler steps, shift 8, CFG 4; through ComfyUI's sampler, the
README's "Model families" and "Forecasting" tables), all with the block gate at threshold 1.0 and a second-order
Taylor forecast of each skipped block's residual on the scheduler's step axis:
  quality   at most 2 forecast steps in a row  2.50x blocks, PSNR 43.0 dB
  balanced  at most 3 forecast steps in a row  3.27x blocks, PSNR 36.5 dB
  fast      at most 4 forecast steps in a row  3.43x blocks, PSNR 32.4 dB
Forecasting on the step axis instead of sigma is worth 6-10 dB here: with shift 8 the last four of 20 steps carry
two thirds of the sigma drop, and residuals move evenly in steps, not in sigma (2.50x: 43.0 dB against 36.5 dB for
the previous presets on sigma; README). Plain reuse of the residual is far below any forecast (the README's
plain-reuse rows). Evenly spread computes beat bunched ones, and the final step must always be computed (skipping it
costs 5 dB), so every preset keeps warm-up and final steps.

Every family gets this skip pattern with its own threshold from the family table (accel/adapters/presets.py), and
the table says whether that threshold was measured on the family (else the shared preset table warns once).
"""
from __future__ import annotations

from ..adapters.presets import PRESETS as FAMILY_FACTS
from ..presets import LEVELS, lookup, register
from .block_cache import BlockCacheConfig

CAPABILITY = "block-cache"
_CONSECUTIVE = {"quality": 2, "balanced": 3, "fast": 4}  # longest run of forecast steps per level

for _facts in FAMILY_FACTS.values():
    register(CAPABILITY, _facts.family,
             {level: BlockCacheConfig(gate="block", threshold=_facts.cache_threshold,
                                      max_consecutive=_CONSECUTIVE[level], forecast_order=2) for level in LEVELS},
             _facts.sources["cache_threshold"], measured=_facts.measured)


def preset(family: str, level: str = "balanced") -> BlockCacheConfig:
    """The block-cache setting for a family and speed level (the reference family's where none is measured)."""
    return lookup(CAPABILITY, family, level)[0]


__all__ = ["LEVELS", "preset"]
