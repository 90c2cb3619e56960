"""Static (content-independent) block patterns over tiles of the token grid, shared by GRAT and the local window.

Tokens are reordered tile by tile (`blocks.tile_order`), so block i is tile i: a (th x tw) patch of one frame, tiles
numbered frame by frame, row by row. A pattern is a bool (n_tiles, n_tiles) relation between tile coordinates; it
depends only on the grid and block size, so it is built once and shared by every batch row and head.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..blocks import Budget, Grid, tile_shape

# (tile coordinates of queries (n, 3), of keys (n, 3), radius) -> bool (n, n)
Pattern = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def tile_coords(grid: Grid, block: int, device=None) -> torch.Tensor:
    """(n_tiles, 3) long: (frame, tile row, tile column) of each tile, in tile order."""
    th, tw = tile_shape(block)
    rows, cols = math.ceil(grid.height / th), math.ceil(grid.width / tw)
    f, y, x = torch.meshgrid(torch.arange(grid.frames, device=device), torch.arange(rows, device=device),
                             torch.arange(cols, device=device), indexing="ij")
    return torch.stack([f, y, x], -1).reshape(-1, 3)


def pattern_mask(grid: Grid, block: int, pattern: Pattern, radius: int, device=None) -> torch.Tensor:
    """The (1, 1, n, n) block mask of `pattern` at `radius`; tiles beyond the token count (ragged tails) are kept
    in line with the kernel's block count."""
    coords = tile_coords(grid, block, device)
    rel = pattern(coords, coords, radius)
    n = math.ceil(grid.tokens / block)
    if rel.shape[0] != n:  # grid not divisible by the tile: blocks no longer equal tiles; fall back to token blocks
        return torch.ones(1, 1, n, n, dtype=torch.bool, device=device)
    return rel.view(1, 1, n, n)


def radius_for(grid: Grid, block: int, pattern: Pattern, budget: Budget, max_radius: int = 64) -> int:
    """The smallest radius whose pattern keeps at least (1 - sparsity) of the blocks (so sparsity <= the target is
    never overshot by more than one radius step)."""
    coords = tile_coords(grid, block)
    want = 1.0 - budget.sparsity
    for r in range(max_radius + 1):
        if pattern(coords, coords, r).float().mean().item() >= want - 1e-9:  # host sync: once per grid
            return r
    return max_radius
