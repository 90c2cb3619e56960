"""`block_sparse_attention`: one entry point that routes to the Triton kernel or the torch reference.

backend "auto" runs the kernel on CUDA tensors it supports and the reference otherwise, logging one warning per
distinct reason so a fallback is never silent and never floods the log; "triton" forces the kernel (CPU tensors need
TRITON_INTERPRET=1) and raises with the reason if it cannot run; "torch" forces the reference.
"""
from __future__ import annotations

import torch

from ..logs import warn_once
from .layout import BlockLayout, SoftmaxCorrection
from .reference import block_sparse_attention_reference, check_inputs
from .triton_kernel import block_sparse_attention_triton, unsupported_reason

BACKENDS = ("auto", "triton", "torch")


def resolve_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout,
                    backend: str = "auto") -> tuple[str, str | None]:
    """("triton" or "torch", why the kernel is not used or None): the route `block_sparse_attention` will take."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    if backend == "torch":
        return "torch", "backend='torch' requested"
    reason = unsupported_reason(q, k, v, layout)
    if backend == "auto" and reason is None and q.device.type != "cuda":
        reason = "CPU tensors (the interpreter is for tests; backend='triton' forces it)"
    return ("torch", reason) if reason else ("triton", None)


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout,
                           correction: SoftmaxCorrection | None = None, scale: float | None = None,
                           backend: str = "auto") -> torch.Tensor:
    """Attention of q [B, H, Lq, D] over k / v [B, H, Lk, D] visiting only the layout's key blocks (+ correction).

    Returns [B, H, Lq, Dv] in q's dtype. `scale` defaults to 1 / sqrt(D). See `layout.py` for the merge rule.
    """
    check_inputs(q, k, v, layout, correction)
    route, reason = resolve_backend(q, k, v, layout, backend)
    if route == "triton":
        return block_sparse_attention_triton(q, k, v, layout, correction, scale)
    if backend == "triton":
        raise RuntimeError(f"backend='triton' cannot run these inputs: {reason}; use backend='auto' to fall back "
                           f"to the torch reference")
    if backend == "auto":
        warn_once(f"block-sparse-fallback:{reason}",
                  "dit-accel: block-sparse attention falls back to the torch reference (slow): %s", reason)
    return block_sparse_attention_reference(q, k, v, layout, correction, scale)
