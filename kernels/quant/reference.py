"""Plain-torch references for the quant kernels: the test oracle and the CPU fallback.

Codebook GEMM (W3A16 / W4A16 / W6A16 / W8A16): weight[n, k] = codebook[code[n, k]] * scale[n, k // group];
out = x @ weight.T (+ bias), accumulated in fp32.

INT8 GEMM (W8A8): activations int8 per row and per K-group (scale_x[m, g]), weights int8 with scale_w[n, g] (g = 1
group means per-channel); out[m, n] = sum_g scale_x[m, g] * scale_w[n, g] * sum_{k in g} xq[m, k] * wq[n, k].
Each group's integer dot product is exact in fp32 while group * 127 * 127 < 2**24 (group <= 1024).
"""
from __future__ import annotations

import torch

from .packing import unpack_codes


def dequantize_codebook(planes: list[torch.Tensor], bits: int, codebook: torch.Tensor, scales: torch.Tensor,
                        k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, K) weights from packed codes, a (2**bits,) codebook and (N, K / group) scales."""
    codes = unpack_codes(planes, bits, k)
    n, groups = scales.shape
    values = codebook.float()[codes].view(n, groups, k // groups)
    return (values * scales.float().unsqueeze(-1)).view(n, k).to(dtype)


def codebook_linear_ref(x: torch.Tensor, planes: list[torch.Tensor], bits: int, codebook: torch.Tensor,
                        scales: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    k = x.shape[-1]
    weight = dequantize_codebook(planes, bits, codebook, scales, k)
    out = x.float() @ weight.T
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)


def quantize_int8_groups(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row and per `group` columns: (int8 values, fp32 scales (rows, K / group))."""
    rows, k = x.shape
    if k % group:
        raise ValueError(f"K={k} is not a multiple of the int8 group {group}")
    xg = x.float().view(rows, k // group, group)
    scale = (xg.abs().amax(-1) / 127.0).clamp(min=1e-12)
    q = torch.round(xg / scale.unsqueeze(-1)).clamp(-127, 127).to(torch.int8)
    return q.view(rows, k), scale


def int8_linear_ref(xq: torch.Tensor, x_scale: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor,
                    bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Grouped int8 GEMM; x_scale (M, G) or (M, 1) per token, w_scale (N, G) or (N, 1) per output row."""
    m, k = xq.shape
    groups = max(x_scale.shape[1], w_scale.shape[1])  # a side with one scale per row broadcasts over groups
    size = k // groups
    x_scale = x_scale.float().expand(m, groups)
    w_scale = w_scale.float().expand(wq.shape[0], groups)
    out = torch.zeros(m, wq.shape[0], dtype=torch.float32, device=xq.device)
    for g in range(groups):
        sl = slice(g * size, (g + 1) * size)
        # Exact integer sums: fp32 holds them while size * 127**2 < 2**24, fp64 beyond (long per-token rows).
        acc = torch.float32 if size <= 1024 else torch.float64
        partial = (xq[:, sl].to(acc) @ wq[:, sl].to(acc).T).float()
        out += partial * x_scale[:, g:g + 1].float() * w_scale[:, g].unsqueeze(0)
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)
