"""Sparse-attention presets per model family: PISA at 50 / 75 / 90 % key-block sparsity per call, blocks of 64, two
dense warm-up steps, the skipped blocks estimated around the means of key groups of 8 (block / 8, zeroth order: about
1/8 of dense attention's work on long sequences), per-layer budgets calibrated on the last warm-up step.

Not yet measured on a real Wan model (no GPU here): the levels follow the PISA paper's operating points for Wan 2.1
(long sequences, where attention is far more concentrated than on the 256-token reference model). The combination is
the one measured best on the reference model (blocks of 16, groups of 2; bench/methods_sparse.py `pisa`): see the
README's sparse-attention section for its numbers against the sol-attn baseline. Other families borrow these, with
one warning each (the shared preset table, accel/presets.py).
"""
from __future__ import annotations

from ..presets import LEVELS, lookup, register, registered
from .config import SparseAttentionConfig
from .policies.pisa import PisaParams

CAPABILITY = "sparse-attention"


def _pisa(sparsity: float, block: int = 64) -> SparseAttentionConfig:
    return SparseAttentionConfig(policy="pisa", sparsity=sparsity, block_size=block, warmup_steps=2,
                                 params=PisaParams(order=0, sub_block=block // 8), allocation="calibrated")


register(CAPABILITY, "wan", {"quality": _pisa(0.5), "balanced": _pisa(0.75), "fast": _pisa(0.9)},
         "PISA paper's operating points for Wan 2.1; the combination measured best on the reference model "
         "(bench/methods_sparse.py pisa)")


def family_presets() -> dict[str, dict[str, SparseAttentionConfig]]:
    """family -> level -> config, for every family with its own presets."""
    return {family: dict(entry.configs) for family, entry in registered(CAPABILITY).items()}


def preset(family: str, level: str = "balanced") -> SparseAttentionConfig:
    return lookup(CAPABILITY, family, level)[0]


__all__ = ["LEVELS", "family_presets", "preset"]
