"""Estimates of what the key blocks a mask skips contribute to each query row's softmax, as `SoftmaxCorrection`s the
kernel merges into its online softmax (see kernels/block_sparse/layout.py for the merge rule).

* `taylor_correction` — PISA ("Piecewise Sparse Attention Is Wiser"): around each skipped block's mean key k̄_b,
  exp(s q·k_j) ≈ exp(s q·k̄_b) (1 + s q·(k_j − k̄_b)). Summed over the block, the zeroth order gives
  exp(s q·k̄_b) Σ_j v_j (denominator exp(s q·k̄_b) n_b; the first-order denominator term vanishes because the
  deviations sum to zero) and the first order adds exp(s q·k̄_b) s qᵀ H_b with H_b = Σ_j (k_j − k̄_b) v_jᵀ.
  The per-row mixture Σ_b w_ib H_b costs as much as dense attention, so by default (`mixing="block"`) each query
  block mixes the H_b with its rows' mean share of each skipped block and each row scales it by its own total weight
  (PISA's kernel goes further and uses one global H); `mixing="row"` is the exact first order (small inputs, tests).
* `centroid_tail_correction` — sol-attn's pooled tail: one pooled term per skipped block, scored by the query
  block's centroid (every row of a query block shares it), a baseline users already have in ComfyUI core.
* `exact_correction` — the exact contribution of a set of keys (text tokens of a joint attention, kept dense).
"""
from __future__ import annotations

import torch

from ...kernels.block_sparse import SoftmaxCorrection
from .blocks import block_lengths, pool_mean, pool_sum, row_block

MIXINGS = ("block", "row")


def _row_mask(mask: torch.Tensor, q_len: int, block: int, batch: int, heads: int) -> torch.Tensor:
    """Block mask [B|1, H|1, nq, nk] -> per query row [B, H, L, nk]."""
    rows = mask.index_select(2, row_block(q_len, block, mask.device))
    return rows.expand(batch, heads, -1, -1)


def _weights(scores: torch.Tensor, skipped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(scores - shift) over the skipped entries (0 elsewhere) and the per-row shift (0 where none is skipped)."""
    masked = scores.masked_fill(~skipped, float("-inf"))
    shift = masked.amax(-1)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    return torch.exp(masked - shift.unsqueeze(-1)), shift


def taylor_correction(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, block: int,
                      scale: float, order: int = 1, mixing: str = "block", sub_block: int | None = None
                      ) -> SoftmaxCorrection:
    """PISA's block-wise Taylor estimate of the blocks `mask` skips (order 0 or 1). q, k, v: (B, H, L, D).

    sub_block: expand around the means of smaller key groups (a divisor of `block`; None: the block itself). The
    Taylor error grows with the keys' spread around the mean they are expanded at, and smaller groups spread less;
    the estimate's cost grows as block / sub_block (about 1/8 of dense attention at block / 4 on long sequences)."""
    if order not in (0, 1):
        raise ValueError(f"Taylor order must be 0 or 1, got {order}")
    if mixing not in MIXINGS:
        raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}")
    sub = block if sub_block is None else sub_block
    if sub < 1 or block % sub:
        raise ValueError(f"sub_block must divide the block size {block}, got {sub_block}")
    b, h, lq, _ = q.shape
    lk = k.shape[2]
    qf = q.float()
    k_mean = pool_mean(k, sub)                                      # (B, H, nk, D), nk key groups of `sub` tokens
    v_sum = pool_sum(v, sub)                                        # (B, H, nk, Dv)
    lengths = block_lengths(lk, sub, q.device)
    nk = lengths.numel()
    group_mask = mask.repeat_interleave(block // sub, dim=-1)[..., :nk]  # key group -> its block's decision
    skipped = ~_row_mask(group_mask, lq, block, b, h)               # (B, H, Lq, nk)
    w, shift = _weights(torch.einsum("bhld,bhnd->bhln", qf, k_mean) * scale, skipped)
    numerator = torch.einsum("bhln,bhnd->bhld", w, v_sum)
    denominator = (w * lengths).sum(-1)
    if order == 1:
        dev = k.float() - k_mean.repeat_interleave(sub, dim=2)[:, :, :lk]
        pad = nk * sub - lk
        vf = v.float()
        if pad:
            dev = torch.cat([dev, dev.new_zeros(b, h, pad, dev.shape[-1])], 2)
            vf = torch.cat([vf, vf.new_zeros(b, h, pad, vf.shape[-1])], 2)
        spread = torch.einsum("bhntd,bhnte->bhnde", dev.view(b, h, nk, sub, -1),
                              vf.view(b, h, nk, sub, -1))             # H_g: (B, H, nk, D, Dv)
        if mixing == "row":
            numerator = numerator + scale * torch.einsum("bhln,bhld,bhnde->bhle", w, qf, spread)
        else:
            total = w.sum(-1, keepdim=True)                             # W_i
            share = w / total.clamp_min(1e-30)                          # each row's split over skipped groups
            nq = (lq + block - 1) // block
            share_q = torch.zeros(b, h, nq, nk, device=q.device).index_add_(2, row_block(lq, block, q.device), share)
            share_q = share_q / block_lengths(lq, block, q.device).view(1, 1, -1, 1)
            mixed = torch.einsum("bhqn,bhnde->bhqde", share_q, spread)  # G_Q: (B, H, nq, D, Dv)
            # Per query block, never per row: a (rows, D, Dv) gather would be as large as the attention itself.
            q_pad = torch.cat([qf, qf.new_zeros(b, h, nq * block - lq, qf.shape[-1])], 2) if nq * block > lq else qf
            per_row = torch.einsum("bhqtd,bhqde->bhqte", q_pad.view(b, h, nq, block, -1), mixed)
            per_row = per_row.reshape(b, h, nq * block, -1)[:, :, :lq]
            numerator = numerator + scale * total * per_row
    return SoftmaxCorrection(numerator.contiguous(), denominator.contiguous(), shift.contiguous())


def taylor_cost(q_len: int, k_len: int, head_dim: int, v_dim: int, block: int, order: int, mixing: str,
                sub_block: int | None = None) -> float:
    """Multiply-adds of `taylor_correction` per (batch, head), as a fraction of dense attention's (q_len * k_len *
    (head_dim + v_dim)): what the estimate of the skipped blocks costs besides the visited blocks."""
    if order < 0:
        return 0.0
    groups = -(-k_len // (sub_block or block))
    q_blocks = -(-q_len // block)
    work = q_len * groups * (head_dim + v_dim)                     # scores against group means + zeroth numerator
    if order == 1:
        work += k_len * head_dim * v_dim                           # H_g
        if mixing == "row":
            work += q_len * groups * head_dim * v_dim
        else:
            work += q_blocks * groups * head_dim * v_dim + q_len * head_dim * v_dim
    return work / (q_len * k_len * (head_dim + v_dim))


def centroid_tail_cost(q_len: int, k_len: int, head_dim: int, v_dim: int, block: int) -> float:
    """Multiply-adds of `centroid_tail_correction` per (batch, head) as a fraction of dense attention's."""
    nq, nk = -(-q_len // block), -(-k_len // block)
    work = nq * nk * head_dim + q_len * nk * v_dim + (q_len + k_len) * head_dim
    return work / (q_len * k_len * (head_dim + v_dim))


def centroid_tail_correction(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, block: int,
                             scale: float) -> SoftmaxCorrection:
    """sol-attn's pooled tail: skipped block b adds exp(s_Qb) Σ_j v_j with s_Qb the query block's centroid score
    against the block's mean key (keys centred on their global mean, the row's own offset added back)."""
    b, h, lq, _ = q.shape
    lk = k.shape[2]
    k_mean = pool_mean(k, block)
    global_mean = k.float().mean(2, keepdim=True)                   # (B, H, 1, D)
    centroid = pool_mean(q, block)                                  # (B, H, nq, D)
    rows = row_block(lq, block, q.device)
    block_scores = torch.einsum("bhqd,bhnd->bhqn", centroid, k_mean - global_mean) * scale
    row_offset = (q.float() * global_mean).sum(-1, keepdim=True) * scale  # q_i · k̄, softmax-invariant in the exact part
    scores = block_scores.index_select(2, rows) + row_offset
    skipped = ~_row_mask(mask, lq, block, b, h)
    w, shift = _weights(scores, skipped)
    numerator = torch.einsum("bhln,bhnd->bhld", w, pool_sum(v, block))
    denominator = (w * block_lengths(lk, block, q.device)).sum(-1)
    return SoftmaxCorrection(numerator.contiguous(), denominator.contiguous(), shift.contiguous())


def exact_correction(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> SoftmaxCorrection:
    """The exact softmax share of the keys `k` (all of them) for every query row."""
    s = torch.einsum("bhld,bhmd->bhlm", q.float(), k.float()) * scale
    shift = s.amax(-1)
    p = torch.exp(s - shift.unsqueeze(-1))
    return SoftmaxCorrection(torch.einsum("bhlm,bhmd->bhld", p, v.float()).contiguous(), p.sum(-1).contiguous(),
                             shift.contiguous())


def merge(a: SoftmaxCorrection | None, b: SoftmaxCorrection | None) -> SoftmaxCorrection | None:
    """One correction holding both (their sums brought to a common shift)."""
    if a is None or b is None:
        return a if b is None else b
    shift = torch.maximum(a.shift, b.shift)
    wa, wb = torch.exp(a.shift - shift), torch.exp(b.shift - shift)
    return SoftmaxCorrection(a.numerator * wa.unsqueeze(-1) + b.numerator * wb.unsqueeze(-1),
                             a.denominator * wa + b.denominator * wb, shift)
