"""Triton W8A8: row-and-group int8 quantization of activations, and the grouped int8 GEMM.

`quantize_rows_int8`: one program per (row, group): absmax, scale = absmax / 127, round half to even (as torch).
`int8_gemm`: out[m, n] = sum_g xs[m, g] * ws[n, g] * (xq[m, g-block] . wq[n, g-block]) + bias. BLOCK_K divides the
group, so each tile's exact int32 tensor-core product is scaled once; with one scale per row on both sides
(GROUPED=False, ComfyUI's ConvRot recipe) the int32 sum runs over all of K and is scaled at the end.
Reference: `reference.quantize_int8_groups` and `reference.int8_linear_ref`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _round_half_even(v):
    r = tl.floor(v + 0.5)
    tie_odd = ((r - v) == 0.5) & ((r - 2.0 * tl.floor(r * 0.5)) != 0.0)
    return tl.where(tie_odd, r - 1.0, r)


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, s_ptr, K, stride_xm, stride_qm, GROUPS, GROUP: tl.constexpr,
                          BLOCK: tl.constexpr):
    row = tl.program_id(0)
    g = tl.program_id(1)
    offs = g * GROUP + tl.arange(0, BLOCK)
    mask = (tl.arange(0, BLOCK) < GROUP) & (offs < K)
    x = tl.load(x_ptr + row * stride_xm + offs, mask=mask, other=0.0).to(tl.float32)
    scale = tl.maximum(tl.max(tl.abs(x), axis=0) / 127.0, 1e-12)
    q = tl.minimum(tl.maximum(_round_half_even(x / scale), -127.0), 127.0)
    tl.store(q_ptr + row * stride_qm + offs, q.to(tl.int8), mask=mask)
    tl.store(s_ptr + row * GROUPS + g, scale)


def quantize_rows_int8(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    m, k = x.shape
    if k % group:
        raise ValueError(f"K={k} is not a multiple of the int8 group {group}")
    groups = k // group
    x = x.contiguous()
    q = torch.empty(m, k, device=x.device, dtype=torch.int8)
    s = torch.empty(m, groups, device=x.device, dtype=torch.float32)
    _quantize_rows_kernel[(m, groups)](x, q, s, k, x.stride(0), q.stride(0), groups, GROUP=group,
                                       BLOCK=triton.next_power_of_2(group))
    return q, s


def _configs():
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in ((128, 256, 128, 8, 3), (128, 128, 128, 8, 4), (128, 128, 64, 4, 4),
                                     (64, 128, 64, 4, 4))]


def _keep(configs, named_args, **kwargs):
    group = named_args["GROUP"] if "GROUP" in named_args else kwargs["GROUP"]
    return [c for c in configs if group % c.kwargs["BLOCK_K"] == 0] or configs[-1:]


@triton.jit
def _int8_gemm_kernel(xq_ptr, xs_ptr, wq_ptr, ws_ptr, b_ptr, out_ptr, M, N, K,
                      stride_xm, stride_wn, stride_om, XG, WG, GROUP: tl.constexpr, GROUPED: tl.constexpr,
                      HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr):
    tl.static_assert(GROUP % BLOCK_K == 0, "BLOCK_K must divide the scale group")
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mmask = offs_m < M
    nmask = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_i = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        kmask = offs_k < K
        a = tl.load(xq_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mmask[:, None] & kmask[None, :],
                    other=0)
        b = tl.load(wq_ptr + offs_n[None, :] * stride_wn + offs_k[:, None], mask=kmask[:, None] & nmask[None, :],
                    other=0)
        part = tl.dot(a, b, out_dtype=tl.int32)
        if GROUPED:
            g = k0 // GROUP
            sx = tl.load(xs_ptr + offs_m * XG + tl.minimum(g, XG - 1), mask=mmask, other=0.0)
            sw = tl.load(ws_ptr + offs_n * WG + tl.minimum(g, WG - 1), mask=nmask, other=0.0)
            acc += part.to(tl.float32) * sx[:, None] * sw[None, :]
        else:
            acc_i += part
    if not GROUPED:
        sx = tl.load(xs_ptr + offs_m, mask=mmask, other=0.0)
        sw = tl.load(ws_ptr + offs_n, mask=nmask, other=0.0)
        acc = acc_i.to(tl.float32) * sx[:, None] * sw[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=nmask, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=mmask[:, None] & nmask[None, :])


_autotuned = triton.autotune(configs=_configs(), key=["N", "K", "GROUP", "GROUPED"],
                             prune_configs_by={"early_config_prune": _keep})(_int8_gemm_kernel)


def int8_gemm(xq: torch.Tensor, xs: torch.Tensor, wq: torch.Tensor, ws: torch.Tensor,
              bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float16,
              block: tuple[int, int, int] | None = None) -> torch.Tensor:
    """xq (M, K) int8 with xs (M, G|1); wq (N, K) int8 with ws (N, G|1) -> (M, N) out_dtype."""
    m, k = xq.shape
    n = wq.shape[0]
    xg, wg = xs.shape[1], ws.shape[1]
    groups = max(xg, wg)
    if (xg not in (1, groups)) or (wg not in (1, groups)) or k % groups:
        raise ValueError(f"scale groups {xg} (activations) and {wg} (weights) do not fit K={k}")
    xq, wq = xq.contiguous(), wq.contiguous()
    xs, ws = xs.float().contiguous(), ws.float().contiguous()
    out = torch.empty(m, n, device=xq.device, dtype=out_dtype)
    b = bias.contiguous() if bias is not None else out
    args = (xq, xs, wq, ws, b, out, m, n, k, xq.stride(0), wq.stride(0), out.stride(0), xg, wg)
    meta = dict(GROUP=k // groups, GROUPED=groups > 1, HAS_BIAS=bias is not None)
    if block is not None:
        bm, bn, bk = block
        _int8_gemm_kernel[(triton.cdiv(m, bm), triton.cdiv(n, bn))](*args, **meta, BLOCK_M=bm, BLOCK_N=bn,
                                                                    BLOCK_K=bk)
    else:
        grid = lambda meta_: (triton.cdiv(m, meta_["BLOCK_M"]), triton.cdiv(n, meta_["BLOCK_N"]))  # noqa: E731
        _autotuned[grid](*args, **meta)
    return out
