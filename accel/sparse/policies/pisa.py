"""PISA, "Piecewise Sparse Attention Is Wiser for Efficient Diffusion Transformers": exact attention on the critical
key blocks, a block-wise Taylor approximation of all the others (see `correction.taylor_correction`).

Critical blocks are the ones with the largest estimated attention mass: each row's zeroth-order share of each key
block (its score against the block's mean key, times the block's size), averaged over the query block. Blocks whose
keys spread far from their mean are approximated worst, so their mass is weighted up by the spread of q·k inside the
block (`spread_weight`; PISA's optional ‖H_b‖ bias plays the same role). The query block's own key block is always
exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..blocks import block_lengths, diagonal, n_blocks, pool_mean, row_block, select
from ..correction import MIXINGS, taylor_correction, taylor_cost
from .base import MaskPolicy, PolicyInput, PolicyParams, Selection, register_policy


@dataclass(frozen=True)
class PisaParams(PolicyParams):
    """order: Taylor order of the skipped blocks' estimate (0: block means only, 1: PISA's first order, -1: none).
    mixing: "block" (each query block mixes the first-order terms once; cheap) or "row" (exact first order).
    spread_weight: how much a block's internal score spread raises its priority for exact computation.
    sub_block: tokens per key group the Taylor estimate expands around (a divisor of the block size; 0: the block).
        Smaller groups spread less around their mean, so the estimate of the skipped blocks is more accurate."""

    order: int = 1
    mixing: str = "block"
    spread_weight: float = 1.0
    sub_block: int = 0

    def __post_init__(self):
        if self.order not in (-1, 0, 1):
            raise ValueError(f"order must be -1 (drop), 0 or 1, got {self.order}")
        if self.mixing not in MIXINGS:
            raise ValueError(f"mixing must be one of {MIXINGS}, got {self.mixing!r}")
        if self.sub_block < 0:
            raise ValueError(f"sub_block must be >= 0 (0: the block size), got {self.sub_block}")


def estimated_log_mass(q: torch.Tensor, k: torch.Tensor, block: int, scale: float,
                       spread_weight: float = 0.0) -> torch.Tensor:
    """(B, H, nq, nk): log of each query block's mean share of attention on each key block (zeroth-order estimate),
    plus `spread_weight` × the block's score spread (the Taylor error grows with it)."""
    lq, lk = q.shape[2], k.shape[2]
    qf = q.float()
    k_mean = pool_mean(k, block)
    scores = torch.einsum("bhld,bhnd->bhln", qf, k_mean) * scale + block_lengths(lk, block, q.device).log()
    share = torch.softmax(scores, dim=-1)
    nq = n_blocks(lq, block)
    rows = row_block(lq, block, q.device)
    mean_share = torch.zeros(*share.shape[:2], nq, share.shape[-1], device=q.device).index_add_(2, rows, share)
    log_mass = torch.log(mean_share.clamp_min(1e-30))
    if spread_weight:
        # std of q·k inside a key block, from the query centroid and the block's per-dimension key variance
        # (a diagonal covariance keeps this O(blocks² · D) instead of the O(L² · D) of the real scores).
        variance = (pool_mean(k.float().pow(2), block) - k_mean.pow(2)).clamp_min(0)
        spread = torch.einsum("bhqd,bhnd->bhqn", pool_mean(q, block).pow(2), variance).sqrt() * scale
        log_mass = log_mass + spread_weight * spread
    return log_mass


@register_policy
class PisaPolicy(MaskPolicy):
    name = "pisa"
    Params = PisaParams
    description = "PISA: exact critical blocks, block-wise Taylor estimate of the rest"

    def select(self, inp: PolicyInput) -> Selection:
        p: PisaParams = self.params
        q, k, blk = inp.q, inp.k, inp.block
        log_mass = estimated_log_mass(q, k, blk, inp.scale, p.spread_weight)
        force = diagonal(n_blocks(q.shape[2], blk), n_blocks(k.shape[2], blk), q.device)
        mask = select(log_mass, inp.budget, force)
        correction = None if p.order < 0 else taylor_correction(q, k, inp.v, mask, blk, inp.scale, p.order,
                                                                 p.mixing, p.sub_block or None)
        cost = taylor_cost(q.shape[2], k.shape[2], q.shape[3], inp.v.shape[3], blk, p.order, p.mixing,
                           p.sub_block or None)
        return Selection(mask, correction, estimate_cost=cost)
