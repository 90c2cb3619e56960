"""Sparse-attention presets per model family: PISA at 50 / 75 / 90 % key-block sparsity, blocks of 64, two dense
warm-up steps.

Not yet measured on a real Wan model (no GPU here): the levels follow the PISA paper's operating points for
Wan 2.1 (long sequences, where attention is far more concentrated than on the 256-token reference model). On the
reference model (blocks of 16; bench/methods_sparse.py) PISA at a 50 % target skips 45 % of the attention work over
the run at ~23 dB PSNR (4 digits x 2 seeds), about 3 dB better than the sol-attn baseline at equal sparsity.
"""
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
