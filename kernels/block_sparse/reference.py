"""Plain-torch block-sparse attention: the test oracle of the Triton kernel and its fallback where Triton cannot run.

Float32 math, output in q's dtype, the merge rule of `layout.py`. Memory stays bounded: it works one query block at a
time and splits the (batch x head) rows so one score chunk holds at most `_SCORE_BUDGET` floats; the key mask is
expanded from blocks to tokens per query block only ([rows, Lk] booleans, never [Lq, Lk]).
"""
from __future__ import annotations

import math

import torch

from .layout import BlockLayout, SoftmaxCorrection, layout_to_mask

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


def block_sparse_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout,
                                     correction: SoftmaxCorrection | None = None,
                                     scale: float | None = None) -> torch.Tensor:
    check_inputs(q, k, v, layout, correction)
    b, h, lq, d = q.shape
    lk, dv = k.shape[2], v.shape[3]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    rows = b * h
    qf, kf, vf = (t.reshape(rows, t.shape[2], t.shape[3]) for t in (q, k, v))
    block_mask = layout_to_mask(layout).expand(b, h, -1, -1).reshape(rows, layout.n_q_blocks, layout.n_k_blocks)
    if correction is not None:
        c_num = correction.numerator.reshape(rows, lq, dv)
        c_den = correction.denominator.reshape(rows, lq)
        c_shift = correction.shift.reshape(rows, lq)
    out = torch.empty(rows, lq, dv, dtype=q.dtype, device=q.device)
    row_chunk = max(1, _SCORE_BUDGET // (layout.block_q * lk))
    for qb in range(layout.n_q_blocks):
        q0, q1 = qb * layout.block_q, min((qb + 1) * layout.block_q, lq)
        key_visible = block_mask[:, qb].repeat_interleave(layout.block_k, dim=-1)[:, :lk]  # [rows, Lk]
        for r0 in range(0, rows, row_chunk):
            r = slice(r0, r0 + row_chunk)
            s = torch.einsum("rqd,rkd->rqk", qf[r, q0:q1].float(), kf[r].float()) * scale
            s = s.masked_fill(~key_visible[r, None, :], float("-inf"))
            m = s.amax(-1)
            if correction is not None:
                shift = c_shift[r, q0:q1].float()
                m = torch.maximum(m, shift)
            m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)  # nothing visited: keep exp() finite
            p = torch.exp(s - m[..., None])
            num = torch.einsum("rqk,rkd->rqd", p, vf[r].float())
            den = p.sum(-1)
            if correction is not None:
                w = torch.exp(shift - m)
                num = num + c_num[r, q0:q1].float() * w[..., None]
                den = den + c_den[r, q0:q1].float() * w
            safe = torch.where(den > 0, den, torch.ones_like(den))
            out[r, q0:q1] = torch.where(den[..., None] > 0, num / safe[..., None], torch.zeros_like(num)).to(q.dtype)
    return out.reshape(b, h, lq, dv)
