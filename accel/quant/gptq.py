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
    h.diagonal().add_(damp * torch.diag(h).mean())
    # One K x K float64 matrix alive at a time besides the next (K = 15360 on Flux: 1.9 GB each).
    factor = torch.linalg.cholesky(h)
    del h
    inverse = torch.cholesky_inverse(factor)
    del factor
    return torch.linalg.cholesky(inverse, upper=True).float()


class CodebookGrid:
    """The values a TLQ / uniform layer can store: one codebook per layer, one fp16 scale per row and group (picked
    by clip search + weighted least squares on the group's compensated columns, weighted by E[x_k^2])."""

    def __init__(self, codebook: torch.Tensor, group_size: int, n: int, k: int, device: torch.device):
        self.codebook, self.group_size = codebook, group_size
        self.codes = torch.empty(n, k, dtype=torch.long, device=device)
        self.scales = torch.empty(n, k // group_size, dtype=torch.float16, device=device)

    def start_group(self, g: int, columns: torch.Tensor, hdiag: torch.Tensor) -> None:
        _, scale = quantize_groups(columns, self.codebook, self.group_size, True, hdiag)
        self.scales[:, g] = scale[:, 0]

    def round(self, values: torch.Tensor, col: int) -> torch.Tensor:
        s = self.scales[:, col // self.group_size].float()
        code = nearest_codes(values / s, self.codebook)
        self.codes[:, col] = code
        return self.codebook[code] * s


def gptq_round(weight: torch.Tensor, gram: torch.Tensor, grid, group_size: int, damp: float = 0.01) -> None:
    """Round `weight` (N, K) column by column onto `grid` (any object with `start_group(g, columns, hdiag)` and
    `round(values, col) -> stored values`), the columns not yet rounded absorbing each column's error."""
    n, k = weight.shape
    w = weight.detach().float().clone()
    u = _inverse_hessian_factor(gram.to(w.device), w, damp)
    hdiag = torch.diag(gram).float().to(w.device)
    block = max(group_size, _BLOCK // group_size * group_size)
    for start in range(0, k, block):
        end = min(start + block, k)
        wb = w[:, start:end].clone()
        errors = torch.zeros_like(wb)
        ub = u[start:end, start:end]
        for j in range(end - start):
            col = start + j
            if col % group_size == 0:  # the group's scale, from its compensated columns
                grid.start_group(col // group_size, wb[:, j:j + group_size], hdiag[col:col + group_size])
            err = (wb[:, j] - grid.round(wb[:, j], col)) / ub[j, j]
            wb[:, j:] -= err.unsqueeze(1) * ub[j, j:].unsqueeze(0)
            errors[:, j] = err
        w[:, end:] -= errors @ u[start:end, end:]


def gptq_quantize(weight: torch.Tensor, gram: torch.Tensor, codebook: torch.Tensor, group_size: int,
                  damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (N, K) and fp16 scales (N, K/group) for `weight` given the input Gram matrix `gram` (K, K)."""
    grid = CodebookGrid(codebook, group_size, *weight.shape, weight.device)
    gptq_round(weight, gram, grid, group_size, damp)
    return grid.codes, grid.scales
