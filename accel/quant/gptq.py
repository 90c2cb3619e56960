"""GPTQ-style error compensation for codebook weights (Frantar et al., "GPTQ", arXiv 2210.17323), on any codebook.

Rounding weight column k to its code leaves an error that the columns not yet rounded can absorb: with the input
Gram matrix H = E[x x^T] from calibration, GPTQ rounds the columns in order and spreads each column's error over
the remaining ones along H^{-1} (the optimal update for the layer's output error). Nothing about the update assumes
an even grid, so it runs unchanged on the twin-log codebook; each group's scale is chosen (clip search + weighted
least squares, `twin_log.quantize_groups`) on the group's already-compensated columns just before they are rounded.
The stored format is exactly the data-free one (codes, fp16 scales, codebook).

Memory (benchmarks/quant_memory.py): factorising a K x K Hessian in float64 needs ~16 K^2 bytes at its peak, 3.6 GiB
at K = 13824 (Wan 14B's ffn.2) and 4.4 GiB at 15360 (Flux's linear2), beside the K^2 fp32 Gram matrix itself. A
layer wider than calibration's Hessian block (`calibration.hessian_block`) therefore arrives with a block-diagonal
Gram matrix (G, B, B): the input channels split into G blocks of B, correlations across blocks dropped, and each
block is factorised and compensated on its own (the error of a column is spread over the rest of its block only).
Rows never interact in GPTQ, so they are rounded in chunks (`twin_log.row_chunk`): the float working copy is one chunk
of one block, and the codes are kept as bytes. A full Gram matrix and a layer of at most one chunk (every layer of
the reference model) give exactly the unchunked result.
"""
from __future__ import annotations

from typing import Callable

import torch

from .twin_log import nearest_codes, quantize_groups, row_chunk

_BLOCK = 128  # columns updated together before the lazy update of the rest (GPTQ's blocking; a multiple of groups)
# Bytes of one layer's Gram matrix and its factorisation: 3/4 of issue 25's 1 GiB budget, the rest left to the row
# chunk's search, the codes and the packed output (benchmarks/quant_memory.py measures the whole).
HESSIAN_BUDGET = 768 << 20
HESSIAN_SPLIT = 256  # Hessian blocks are multiples of this: core W4A8's rotation group and every group size up to it


def hessian_bytes(in_features: int, block: int) -> int:
    """One layer's Hessian memory with blocks of `block` channels: the diagonal Gram blocks (K x B fp32) twice (the
    running sum calibration keeps and the normalised copy GPTQ reads) and one block's float64 factorisation at its
    peak (about 20 B^2 bytes: two B x B float64 matrices and the LAPACK call's own)."""
    return 8 * in_features * block + 20 * block * block


def hessian_block(in_features: int, budget: int | None = None) -> int:
    """The widest Hessian block whose memory (`hessian_bytes`) fits `budget` (HESSIAN_BUDGET when None): K itself
    where the full Gram matrix fits (K <= 5362 at 768 MiB), else the largest divisor of K that is a multiple of
    HESSIAN_SPLIT and fits (the fewest blocks: the least compensation dropped)."""
    budget = HESSIAN_BUDGET if budget is None else budget
    if hessian_bytes(in_features, in_features) <= budget or in_features % HESSIAN_SPLIT:
        return in_features
    units = in_features // HESSIAN_SPLIT
    for d in range(units, 0, -1):
        if units % d == 0 and hessian_bytes(in_features, d * HESSIAN_SPLIT) <= budget:
            return d * HESSIAN_SPLIT
    return HESSIAN_SPLIT


def _inverse_hessian_factor(held: list[torch.Tensor], damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(upper Cholesky factor of H^{-1}, dead input channels) of the Gram block in `held` (a one-item list this
    empties, so a block made for this call is freed once copied): dead channels (H_kk = 0) are pinned (H_kk = 1; the
    caller zeroes their weights) and H is dampened."""
    gram = held.pop()
    h = gram.to(torch.float64, copy=True)
    del gram
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h.diagonal().add_(damp * torch.diag(h).mean())
    # One K x K float64 matrix alive at a time besides the next (K = 15360 on Flux: 1.9 GB each).
    factor = torch.linalg.cholesky(h)
    del h
    inverse = torch.cholesky_inverse(factor)
    del factor
    return torch.linalg.cholesky(inverse, upper=True).float(), dead


class CodebookGrid:
    """The values a TLQ / uniform layer can store: one codebook per layer, one fp16 scale per row and group (picked
    by clip search + weighted least squares on the group's compensated columns, weighted by E[x_k^2])."""

    def __init__(self, codebook: torch.Tensor, group_size: int, n: int, k: int, device: torch.device):
        self.codebook, self.group_size = codebook, group_size
        self.codes = torch.empty(n, k, dtype=torch.uint8, device=device)  # < 256 levels: a byte per weight
        self.scales = torch.empty(n, k // group_size, dtype=torch.float16, device=device)

    def rows(self, start: int, end: int) -> "CodebookGrid":
        """The same grid for rows start:end, writing into this grid's codes and scales."""
        part = object.__new__(CodebookGrid)
        part.codebook, part.group_size = self.codebook, self.group_size
        part.codes, part.scales = self.codes[start:end], self.scales[start:end]
        return part

    def start_group(self, g: int, columns: torch.Tensor, hdiag: torch.Tensor) -> None:
        _, scale = quantize_groups(columns, self.codebook, self.group_size, True, hdiag)
        self.scales[:, g] = scale[:, 0]

    def round(self, values: torch.Tensor, col: int) -> torch.Tensor:
        s = self.scales[:, col // self.group_size].float()
        code = nearest_codes(values / s, self.codebook)
        self.codes[:, col] = code.to(self.codes.dtype)
        return self.codebook[code] * s


def hessian_blocks(gram: torch.Tensor) -> torch.Tensor:
    """A Gram matrix as (G, B, B) diagonal blocks: a full (K, K) one is a single block."""
    return gram.unsqueeze(0) if gram.dim() == 2 else gram


def _round_columns(w: torch.Tensor, u: torch.Tensor, hdiag: torch.Tensor, grid, group_size: int, offset: int
                   ) -> None:
    """GPTQ's column loop on `w` (rows x B, the block's columns from `offset` on), `u` the block's factor."""
    k = w.shape[1]
    block = max(group_size, _BLOCK // group_size * group_size)
    for start in range(0, k, block):
        end = min(start + block, k)
        wb = w[:, start:end].clone()
        errors = torch.zeros_like(wb)
        ub = u[start:end, start:end]
        for j in range(end - start):
            col = offset + start + j
            if col % group_size == 0:  # the group's scale, from its compensated columns
                grid.start_group(col // group_size, wb[:, j:j + group_size], hdiag[start + j:start + j + group_size])
            err = (wb[:, j] - grid.round(wb[:, j], col)) / ub[j, j]
            wb[:, j:] -= err.unsqueeze(1) * ub[j, j:].unsqueeze(0)
            errors[:, j] = err
        w[:, end:] -= errors @ u[start:end, end:]


def _block_factor(blocks: torch.Tensor, b: int, transform, damp: float, device: torch.device):
    """(factor, dead channels, diagonal) of Hessian block b; a transformed block lives only in here, so it is
    freed before the float64 factorisation peaks."""
    block_gram = blocks[b].to(device)
    if transform is not None:
        block_gram = transform(block_gram)
    hdiag = torch.diag(block_gram).float()
    held = [block_gram]
    del block_gram
    u, dead = _inverse_hessian_factor(held, damp)
    return u, dead, hdiag


def gptq_round(weight: torch.Tensor, gram: torch.Tensor, grid, group_size: int, damp: float = 0.01,
               rows: int | None = None, block_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
               ) -> None:
    """Round `weight` (N, K) column by column onto `grid` (any object with `rows(start, end)`,
    `start_group(g, columns, hdiag)` and `round(values, col) -> stored values`), the columns not yet rounded
    absorbing each column's error. `gram`: (K, K), or (G, B, B) diagonal blocks (B a multiple of group_size).
    `rows`: rows rounded together (`row_chunk(K)` when None). `block_transform` maps each Hessian block before it
    is factorised (core W4A8's rotation of the basis), one block at a time: no transformed copy of the whole."""
    n, k = weight.shape
    blocks = hessian_blocks(gram)
    size = blocks.shape[-1]
    chunk = rows or row_chunk(k)
    if blocks.shape[0] * size != k or size % group_size:
        raise ValueError(f"Hessian blocks {tuple(blocks.shape)} do not tile {k} input channels in groups of "
                         f"{group_size}")
    for b in range(blocks.shape[0]):
        u, dead, hdiag = _block_factor(blocks, b, block_transform, damp, weight.device)
        cols = slice(b * size, (b + 1) * size)
        for r in range(0, n, chunk):
            w = weight[r:r + chunk, cols].detach().float().clone()
            w[:, dead] = 0.0
            _round_columns(w, u, hdiag, grid.rows(r, r + chunk), group_size, b * size)
        del u


def gptq_quantize(weight: torch.Tensor, gram: torch.Tensor, codebook: torch.Tensor, group_size: int,
                  damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (N, K, uint8) and fp16 scales (N, K/group) for `weight` given the input Gram matrix `gram` ((K, K) or
    (G, B, B) diagonal blocks)."""
    grid = CodebookGrid(codebook, group_size, *weight.shape, weight.device)
    gptq_round(weight, gram, grid, group_size, damp)
    return grid.codes, grid.scales
