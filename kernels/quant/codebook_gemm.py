"""Triton dequant-GEMM for codebook-quantized weights (W3A16 / W4A16 / W6A16 / W8A16): out = x @ W.T + bias.

Algorithm: each program owns a BLOCK_M x BLOCK_N output tile and walks K in BLOCK_K steps. For a step it loads the
fp16/bf16 activations, the packed code bytes of each bit plane (see `packing.py`: shift-and-mask per plane, the
planes OR-ed together), maps codes through the layer's codebook (a 2**bits-entry table, gathered from L1/L2), and
multiplies on the tensor cores. BLOCK_K divides the scale group, so the group's per-row scale multiplies the tile's
fp32 partial product once instead of every weight. Reference: `reference.codebook_linear_ref`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .packing import plane_widths


def _configs():
    # Small tiles first so TRITON_INTERPRET=1 runs (tests) stay cheap; the large ones matter on GPUs.
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in ((128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (64, 128, 64, 4, 4),
                                     (128, 128, 32, 4, 4))]


def _keep(configs, named_args, **kwargs):
    """Tiles whose BLOCK_K divides the scale group (the kernel's invariant)."""
    group = named_args["GROUP"] if "GROUP" in named_args else kwargs["GROUP"]
    return [c for c in configs if group % c.kwargs["BLOCK_K"] == 0] or configs[-1:]


@triton.jit
def _unpack_plane(p_ptr, stride_pn, offs_k, offs_n, mask, WIDTH: tl.constexpr):
    PER_BYTE: tl.constexpr = 8 // WIDTH
    byte = tl.load(p_ptr + offs_n[None, :] * stride_pn + (offs_k // PER_BYTE)[:, None], mask=mask, other=0)
    return (byte.to(tl.int32) >> ((offs_k % PER_BYTE) * WIDTH)[:, None]) & ((1 << WIDTH) - 1)


@triton.jit
def _codebook_gemm_kernel(x_ptr, p0_ptr, p1_ptr, cb_ptr, s_ptr, b_ptr, out_ptr, M, N, K,
                          stride_xm, stride_xk, stride_p0n, stride_p1n, stride_sn, stride_om, stride_on,
                          GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr, HAS_BIAS: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    tl.static_assert(GROUP % BLOCK_K == 0, "BLOCK_K must divide the scale group")
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)
        wmask = (offs_k[:, None] < K) & (offs_n[None, :] < N)
        code = _unpack_plane(p0_ptr, stride_p0n, offs_k, offs_n, wmask, W0)
        if W1 > 0:
            code = code | (_unpack_plane(p1_ptr, stride_p1n, offs_k, offs_n, wmask, W1) << W0)
        w = tl.load(cb_ptr + code).to(x.dtype)                                   # (BLOCK_K, BLOCK_N)
        scale = tl.load(s_ptr + offs_n * stride_sn + k0 // GROUP, mask=offs_n < N, other=0.0).to(tl.float32)
        acc += tl.dot(x, w) * scale[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on, acc.to(out_ptr.dtype.element_ty),
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


_autotuned = triton.autotune(configs=_configs(), key=["N", "K", "GROUP", "W0", "W1"],
                             prune_configs_by={"early_config_prune": _keep})(_codebook_gemm_kernel)


def codebook_gemm(x: torch.Tensor, planes: list[torch.Tensor], bits: int, codebook: torch.Tensor,
                  scales: torch.Tensor, bias: torch.Tensor | None = None,
                  block: tuple[int, int, int] | None = None) -> torch.Tensor:
    """x (M, K) fp16/bf16/fp32 -> (M, N) in x's dtype. `block` fixes (BLOCK_M, BLOCK_N, BLOCK_K) (tests)."""
    m, k = x.shape
    n, groups = scales.shape
    group = k // groups
    widths = plane_widths(bits)
    if len(widths) > 2:
        raise ValueError(f"{bits}-bit codes need more than two planes")
    p0 = planes[0].contiguous()
    p1 = planes[1].contiguous() if len(widths) == 2 else p0
    cb = codebook.to(device=x.device, dtype=torch.float32).contiguous()
    s = scales.contiguous()
    out = torch.empty(m, n, device=x.device, dtype=x.dtype)
    b = bias.contiguous() if bias is not None else out
    args = (x, p0, p1, cb, s, b, out, m, n, k, x.stride(0), x.stride(1), p0.stride(0), p1.stride(0), s.stride(0),
            out.stride(0), out.stride(1))
    meta = dict(GROUP=group, W0=widths[0], W1=widths[1] if len(widths) == 2 else 0, HAS_BIAS=bias is not None)
    if block is not None:
        bm, bn, bk = block
        grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
        _codebook_gemm_kernel[grid](*args, **meta, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
    else:
        grid = lambda meta_: (triton.cdiv(m, meta_["BLOCK_M"]), triton.cdiv(n, meta_["BLOCK_N"]))  # noqa: E731
        _autotuned[grid](*args, **meta)
    return out
