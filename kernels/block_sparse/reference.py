"""Plain-torch block-sparse attention: the test oracle of the Triton kernel and its fallback where Triton cannot run.

Float32 math, output in q's dtype, the merge rule of `layout.py`. Each query block of each (batch, head) is one unit
that gathers only the key / value blocks in its list (padded to the longest list, `max_kv`), so work, memory and a
FLOP counter follow the layout's density. Units are processed in chunks of at most `_SCORE_BUDGET` floats of scores
(one chunk for small problems, so the Python loop stays short); never an [Lq, Lk] matrix.
"""
from __future__ import annotations

import math

import torch

from .layout import BlockLayout, SoftmaxCorrection

_SCORE_BUDGET = 1 << 26  # floats per score chunk (256 MiB in fp32)


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout,
                 correction: SoftmaxCorrection | None) -> None:
    """Raise a ValueError naming the mismatch; shared by both backends so they refuse the same inputs."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"block-sparse attention wants q, k, v as [batch, heads, tokens, head_dim], got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, h, lq, d = q.shape
    if k.shape[:2] != (b, h) or v.shape[:2] != (b, h) or k.shape[2] != v.shape[2] or k.shape[3] != d:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} do not match: k and v need "
                         f"q's batch and heads, the same token count, and k needs q's head_dim")
    if not (q.device == k.device == v.device == layout.device):
        raise ValueError(f"q, k, v and the layout must be on one device, got {q.device}, {k.device}, {v.device}, "
                         f"{layout.device}")
    layout.check_compatible(b, h, lq, k.shape[2])
    if correction is not None:
        correction.check_compatible(b, h, lq, v.shape[3])


def _pad_rows(t: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad dim 1 of [rows, L, ...] to `length` (the last query block's tail)."""
    if t.shape[1] == length:
        return t
    return torch.cat([t, t.new_zeros(t.shape[0], length - t.shape[1], *t.shape[2:])], dim=1)


def block_sparse_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout,
                                     correction: SoftmaxCorrection | None = None,
                                     scale: float | None = None) -> torch.Tensor:
    check_inputs(q, k, v, layout, correction)
    b, h, lq, d = q.shape
    lk, dv = k.shape[2], v.shape[3]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    rows, nqb, bq, bk = b * h, layout.n_q_blocks, layout.block_q, layout.block_k
    units = rows * nqb  # one unit = one query block of one (batch, head) row
    # Query blocks padded to whole blocks, one unit each: [units, bq, ...].
    q_units = _pad_rows(q.reshape(rows, lq, d), nqb * bq).reshape(units, bq, d)
    if correction is not None:
        c_num = _pad_rows(correction.numerator.reshape(rows, lq, dv), nqb * bq).reshape(units, bq, dv)
        c_den = _pad_rows(correction.denominator.reshape(rows, lq), nqb * bq).reshape(units, bq)
        c_shift = _pad_rows(correction.shift.reshape(rows, lq), nqb * bq).reshape(units, bq)
    # The key tokens each unit visits: its listed blocks (padded to max_kv entries), as rows of flattened k / v.
    gathered = layout.max_kv * bk
    kv_indices = layout.kv_indices.expand(b, h, -1, -1).reshape(units, layout.max_kv)
    kv_counts = layout.kv_counts.expand(b, h, -1).reshape(units)
    tokens = (kv_indices.long()[:, :, None] * bk + torch.arange(bk, device=q.device)).reshape(units, gathered)
    entry = torch.arange(layout.max_kv, device=q.device).repeat_interleave(bk)
    valid = (entry < kv_counts[:, None]) & (tokens < lk)  # [units, gathered]
    row_of_unit = torch.arange(rows, device=q.device).repeat_interleave(nqb)
    flat = row_of_unit[:, None] * lk + tokens.clamp(max=lk - 1)
    k_flat, v_flat = k.reshape(rows * lk, d), v.reshape(rows * lk, dv)

    out = torch.empty(units, bq, dv, dtype=q.dtype, device=q.device)
    chunk = max(1, _SCORE_BUDGET // (gathered * max(bq, d, dv)))
    for u0 in range(0, units, chunk):
        u = slice(u0, u0 + chunk)
        k_sel, v_sel = k_flat[flat[u]].float(), v_flat[flat[u]].float()
        s = torch.einsum("uqd,ukd->uqk", q_units[u].float(), k_sel) * scale
        s = s.masked_fill(~valid[u, None, :], float("-inf"))
        m = s.amax(-1)
        if correction is not None:
            shift = c_shift[u].float()
            m = torch.maximum(m, shift)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)  # nothing visited: keep exp() finite
        p = torch.exp(s - m[..., None])
        num = torch.einsum("uqk,ukd->uqd", p, v_sel)
        den = p.sum(-1)
        if correction is not None:
            w = torch.exp(shift - m)
            num = num + c_num[u].float() * w[..., None]
            den = den + c_den[u].float() * w
        safe = torch.where(den > 0, den, torch.ones_like(den))
        out[u] = torch.where(den[..., None] > 0, num / safe[..., None], torch.zeros_like(num)).to(q.dtype)
    return out.reshape(rows, nqb * bq, dv)[:, :lq].reshape(b, h, lq, dv)
