"""Sparse-attention presets per model family (filled from measurements; see bench/methods_sparse.py)."""
from __future__ import annotations

import logging

from .config import SparseAttentionConfig

log = logging.getLogger("dit_accel")
FALLBACK_FAMILY = "wan"
LEVELS = ("quality", "balanced", "fast")

_WAN = {
    "quality": SparseAttentionConfig(policy="pisa", sparsity=0.5, block_size=64, warmup_steps=2),
    "balanced": SparseAttentionConfig(policy="pisa", sparsity=0.75, block_size=64, warmup_steps=2),
    "fast": SparseAttentionConfig(policy="pisa", sparsity=0.9, block_size=64, warmup_steps=2),
}

FAMILY_PRESETS: dict[str, dict[str, SparseAttentionConfig]] = {"wan": _WAN}


def preset(family: str, level: str = "balanced") -> SparseAttentionConfig:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if family not in FAMILY_PRESETS:
        log.warning("dit-accel: no sparse-attention preset measured for %r yet; using the %s preset measured on the "
                    "reference (Wan-format) model. Check the result, or use 'custom'.", family, level)
        family = FALLBACK_FAMILY
    return FAMILY_PRESETS[family][level]
