"""The baseline users already have: ComfyUI core's "Model Sparse Attention" node, method `sol-attn`
(comfy_kitchen's Sol-Attn), rebuilt from its published reference so we can measure against it on the same model.

Per head and query block, a key block is computed exactly when the query block's mean score against the block's mean
key (keys centred on their global mean) clears an adaptive threshold: `tau` standard deviations of that score's
spread across key blocks, estimated from the centroid and the per-dimension variance of the block means. The
diagonal block and its neighbours are always exact; every other block contributes one pooled term (the centroid
score, the block's summed values), so no key leaves the softmax denominator.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..blocks import diagonal, n_blocks, pool_mean
from ..correction import centroid_tail_correction, centroid_tail_cost
from .base import MaskPolicy, PolicyInput, PolicyParams, Selection, register_policy


@dataclass(frozen=True)
class SolParams(PolicyParams):
    """tau: threshold in score standard deviations; higher is sparser (core's default 1.3).
    neighbours: key blocks either side of the diagonal always computed (core: 1).
    pooled_tail: add the pooled term of the skipped blocks (core: always on)."""

    tau: float = 1.3
    neighbours: int = 1
    pooled_tail: bool = True

    def __post_init__(self):
        if self.tau < 0 or self.neighbours < 0:
            raise ValueError("tau and neighbours must be >= 0")


@register_policy
class SolAttnPolicy(MaskPolicy):
    name = "sol-attn"
    Params = SolParams
    description = "ComfyUI core's sol-attn: adaptive per-head threshold, pooled tail (the baseline)"

    def select(self, inp: PolicyInput) -> Selection:
        p: SolParams = self.params
        q, k, blk = inp.q, inp.k, inp.block
        k_blocks = pool_mean(k, blk)
        centred = k_blocks - k_blocks.mean(2, keepdim=True)               # (B, H, nk, D)
        centroid = pool_mean(q, blk)                                      # (B, H, nq, D)
        col_mean = torch.einsum("bhqd,bhnd->bhqn", centroid, centred) * inp.scale
        spread = (centroid.pow(2) * centred.pow(2).mean(2, keepdim=True)).sum(-1) * inp.scale ** 2
        exact = col_mean > p.tau * torch.sqrt(spread + 1e-6).unsqueeze(-1)
        nq, nk = n_blocks(q.shape[2], blk), n_blocks(k.shape[2], blk)
        exact = exact | diagonal(nq, nk, q.device, p.neighbours)
        correction = centroid_tail_correction(q, k, inp.v, exact, blk, inp.scale) if p.pooled_tail else None
        cost = centroid_tail_cost(q.shape[2], k.shape[2], q.shape[3], inp.v.shape[3], blk) if p.pooled_tail else 0.0
        return Selection(exact, correction, estimate_cost=cost)
