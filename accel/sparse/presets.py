"""Sparse-attention presets per model family: PISA at 50 / 75 / 90 % key-block sparsity per call, blocks of 64, two
dense warm-up steps, the skipped blocks estimated around the means of key groups of 8 (block / 8, zeroth order: about
1/8 of dense attention's work on long sequences), per-layer budgets calibrated on the last warm-up step.

Not yet measured on a real Wan model (no GPU here): the levels follow the PISA paper's operating points for Wan 2.1
(long sequences, where attention is far more concentrated than on the 256-token reference model). The combination is
the one measured best on the reference model (blocks of 16, groups of 2; bench/methods_sparse.py `pisa`): see the
README's sparse-attention section for its numbers against the sol-attn baseline.
"""
from __future__ import annotations

import logging

from .config import SparseAttentionConfig
from .policies.pisa import PisaParams

log = logging.getLogger("dit_accel")
FALLBACK_FAMILY = "wan"
LEVELS = ("quality", "balanced", "fast")


def _pisa(sparsity: float, block: int = 64) -> SparseAttentionConfig:
    return SparseAttentionConfig(policy="pisa", sparsity=sparsity, block_size=block, warmup_steps=2,
                                 params=PisaParams(order=0, sub_block=block // 8), allocation="calibrated")


_WAN = {"quality": _pisa(0.5), "balanced": _pisa(0.75), "fast": _pisa(0.9)}

FAMILY_PRESETS: dict[str, dict[str, SparseAttentionConfig]] = {"wan": _WAN}


def preset(family: str, level: str = "balanced") -> SparseAttentionConfig:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if family not in FAMILY_PRESETS:
        log.warning("dit-accel: no sparse-attention preset measured for %r yet; using the %s preset measured on the "
                    "reference (Wan-format) model. Check the result, or use 'custom'.", family, level)
        family = FALLBACK_FAMILY
    return FAMILY_PRESETS[family][level]
