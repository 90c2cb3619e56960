"""Pick the Triton kernel on CUDA tensors and the torch reference elsewhere; both take the same arguments."""
from __future__ import annotations

import os

import torch

from ..capability import triton_available
from . import reference


def _use_triton(x: torch.Tensor) -> bool:
    if os.environ.get("DIT_ACCEL_QUANT_KERNELS", "auto") == "torch":
        return False
    return x.is_cuda and triton_available()


def codebook_linear(x: torch.Tensor, planes: list[torch.Tensor], bits: int, codebook: torch.Tensor,
                    scales: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) @ dequant(codes).T + bias, for codes packed by `packing.pack_codes`."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if _use_triton(x2):
        from .codebook_gemm import codebook_gemm
        out = codebook_gemm(x2, planes, bits, codebook, scales, bias)
    else:
        out = reference.codebook_linear_ref(x2, planes, bits, codebook, scales, bias)
    return out.reshape(*shape[:-1], out.shape[-1])


def int8_linear(x: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor, act_group: int,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """Dynamic int8 activations (per token, per `act_group` channels; 0 = whole row) times int8 weights."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    group = act_group or shape[-1]
    if _use_triton(x2):
        from .int8_gemm import int8_gemm, quantize_rows_int8
        xq, xs = quantize_rows_int8(x2, group)
        out = int8_gemm(xq, xs, wq, w_scale, bias, out_dtype=x.dtype)
    else:
        xq, xs = reference.quantize_int8_groups(x2, group)
        out = reference.int8_linear_ref(xq, xs, wq, w_scale, bias, out_dtype=x.dtype)
    return out.reshape(*shape[:-1], out.shape[-1])
