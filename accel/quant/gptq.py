"""GPTQ-style error compensation for codebook weights (Frantar et al., "GPTQ", arXiv 2210.17323), on any codebook.

Rounding weight column k to its code leaves an error that the columns not yet rounded can absorb: with the input
Gram matrix H = E[x x^T] from calibration, GPTQ rounds the columns in order and spreads each column's error over
the remaining ones along H^{-1} (the optimal update for the layer's output error). Nothing about the update assumes
an even grid, so it runs unchanged on the twin-log codebook; each group's scale is chosen (clip search + weighted
least squares, `twin_log.quantize_groups`) on the group's already-compensated columns just before they are rounded.
The stored format is exactly the data-free one (codes, fp16 scales, codebook).
"""
from __future__ import annotations

import torch

from .twin_log import nearest_codes, quantize_groups

_BLOCK = 128  # columns updated together before the lazy update of the rest (GPTQ's blocking; a multiple of groups)


def _inverse_hessian_factor(gram: torch.Tensor, weight: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of H^{-1}, with dead input channels pinned (H_kk = 1, W_:k = 0) and H dampened."""
    h = gram.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    weight[:, dead] = 0.0
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True).float()


def gptq_quantize(weight: torch.Tensor, gram: torch.Tensor, codebook: torch.Tensor, group_size: int,
                  damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (N, K) and fp16 scales (N, K/group) for `weight` given the input Gram matrix `gram` (K, K)."""
    n, k = weight.shape
    w = weight.detach().float().clone()
    u = _inverse_hessian_factor(gram.to(w.device), w, damp)
    hdiag = torch.diag(gram).float().to(w.device)
    codes = torch.empty(n, k, dtype=torch.long, device=w.device)
    scales = torch.empty(n, k // group_size, dtype=torch.float16, device=w.device)
    block = max(group_size, _BLOCK // group_size * group_size)
    for start in range(0, k, block):
        end = min(start + block, k)
        wb = w[:, start:end].clone()
        errors = torch.zeros_like(wb)
        ub = u[start:end, start:end]
        for j in range(end - start):
            col = start + j
            if col % group_size == 0:  # the group's scale, from its compensated columns, weighted by E[x_k^2]
                g = col // group_size
                group_cols = slice(j, j + group_size)
                _, scale = quantize_groups(wb[:, group_cols], codebook, group_size, True,
                                           hdiag[col:col + group_size])
                scales[:, g] = scale[:, 0]
            s = scales[:, col // group_size].float()
            code = nearest_codes(wb[:, j] / s, codebook)
            codes[:, col] = code
            err = (wb[:, j] - codebook[code] * s) / ub[j, j]
            wb[:, j:] -= err.unsqueeze(1) * ub[j, j:].unsqueeze(0)
            errors[:, j] = err
        w[:, end:] -= errors @ u[start:end, end:]
    return codes, scales
