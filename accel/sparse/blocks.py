"""Block arithmetic every mask policy shares: pooling tokens into blocks, budgets, and token orders.

All functions are pure: tensors in, tensors out, (batch, heads, tokens, dim) layout, float32 math. The only host
syncs are where a Python int is needed (a top-k size), and they are marked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Budget:
    """How much of the attention a policy may keep.

    sparsity: fraction of key blocks each query block skips (top-k: keeps ceil((1 - sparsity) * blocks)).
    top_p: keep the fewest key blocks whose estimated attention mass reaches top_p (a dynamic budget, as in
        Sparse VideoGen2 and DraftAttention); when set, it replaces `sparsity` for the policies that estimate mass.
    """

    sparsity: float = 0.5
    top_p: float | None = None

    def __post_init__(self):
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def keep_count(self, blocks: int) -> int:
        return max(1, min(blocks, math.ceil((1.0 - self.sparsity) * blocks - 1e-9)))


@dataclass(frozen=True)
class Grid:
    """The image/video token grid, frames x height x width, in the order the tokens arrive (row-major)."""

    frames: int
    height: int
    width: int

    @property
    def tokens(self) -> int:
        return self.frames * self.height * self.width

    @classmethod
    def infer(cls, tokens: int, hint: tuple[int, ...] | None = None) -> "Grid":
        """The grid the model reports (`hint`, from the family's adapter) if it fits, else the squarest single frame."""
        if hint is not None and len(hint) == 3 and math.prod(int(x) for x in hint) == tokens:
            return cls(*(int(x) for x in hint))
        if hint is not None and len(hint) == 2 and math.prod(int(x) for x in hint) == tokens:
            return cls(1, int(hint[0]), int(hint[1]))
        h = max(d for d in range(1, math.isqrt(tokens) + 1) if tokens % d == 0)
        return cls(1, h, tokens // h)


def n_blocks(length: int, block: int) -> int:
    return math.ceil(length / block)


def block_lengths(length: int, block: int, device=None) -> torch.Tensor:
    """Tokens per block (float32): `block` everywhere except a shorter last block."""
    n = n_blocks(length, block)
    lengths = torch.full((n,), float(block), device=device)
    lengths[-1] = float(length - (n - 1) * block)
    return lengths


def _padded(x: torch.Tensor, block: int) -> torch.Tensor:
    b, h, l, d = x.shape
    pad = n_blocks(l, block) * block - l
    if pad:
        x = torch.cat([x, x.new_zeros(b, h, pad, d)], dim=2)
    return x.reshape(b, h, -1, block, d)


def pool_sum(x: torch.Tensor, block: int) -> torch.Tensor:
    """(B, H, L, D) -> (B, H, n_blocks, D): sum over each block's tokens (float32)."""
    return _padded(x.float(), block).sum(3)


def pool_mean(x: torch.Tensor, block: int) -> torch.Tensor:
    """(B, H, L, D) -> (B, H, n_blocks, D): mean over each block's tokens (float32), ragged tail handled."""
    return pool_sum(x, block) / block_lengths(x.shape[2], block, x.device).view(1, 1, -1, 1)


def row_block(length: int, block: int, device=None) -> torch.Tensor:
    """The block index of each token (long, (L,))."""
    return torch.arange(length, device=device) // block


def diagonal(nq: int, nk: int, device=None, width: int = 0) -> torch.Tensor:
    """Bool (nq, nk): query block i and key blocks within `width` of the matching position (square: |i - j| <= w)."""
    qi = torch.arange(nq, device=device, dtype=torch.float32) * (nk / nq)
    kj = torch.arange(nk, device=device, dtype=torch.float32)
    return (qi.view(-1, 1) - kj.view(1, -1)).abs() <= width + 0.5 * max(1.0, nk / nq) - 0.5


def keep_top_k(scores: torch.Tensor, keep: int, force: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask of the `keep` highest scores along the last dim; forced entries are kept within the count."""
    if force is not None:
        scores = scores.masked_fill(force, float("inf"))
    keep = min(keep, scores.shape[-1])
    idx = scores.topk(keep, dim=-1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, idx, True)


def keep_top_p(mass: torch.Tensor, top_p: float, force: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask of the fewest entries (largest first) whose share of the last dim's total mass reaches `top_p`.

    `mass` is non-negative. Forced entries are kept and count towards the share.
    """
    total = mass.sum(-1, keepdim=True).clamp_min(1e-30)
    # Forced entries go first in the order but add only their own mass to the share.
    priority = mass if force is None else torch.where(force, mass + total + 1.0, mass)
    order = priority.argsort(dim=-1, descending=True)
    sorted_mass = mass.gather(-1, order)
    before = (sorted_mass.cumsum(-1) - sorted_mass) / total   # share reached before adding this entry
    keep_sorted = before < top_p
    keep_sorted[..., 0] = True
    mask = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return mask if force is None else mask | force


def select(log_mass: torch.Tensor, budget: Budget, force: torch.Tensor | None = None) -> torch.Tensor:
    """Keep key blocks by the budget, from per-(query block, key block) estimated log attention mass."""
    if budget.top_p is not None:
        mass = torch.softmax(log_mass, dim=-1)
        return keep_top_p(mass, budget.top_p, force)
    return keep_top_k(log_mass, budget.keep_count(log_mass.shape[-1]), force)


def tile_order(grid: Grid, tile: tuple[int, int], device=None) -> torch.Tensor:
    """A token order that lists each frame's (th x tw) spatial tiles one after the other (row-major inside a tile),
    so a block of th*tw tokens is one compact 2-D patch instead of a thin strip of one row (DraftAttention, GRAT)."""
    th, tw = tile
    f = torch.arange(grid.frames, device=device).view(-1, 1, 1)
    y = torch.arange(grid.height, device=device).view(1, -1, 1)
    x = torch.arange(grid.width, device=device).view(1, 1, -1)
    tiles_x = math.ceil(grid.width / tw)
    tiles_per_frame = math.ceil(grid.height / th) * tiles_x
    key = ((f * tiles_per_frame + (y // th) * tiles_x + (x // tw)) * (th * tw) + (y % th) * tw + (x % tw))
    return torch.argsort(key.reshape(-1), stable=True)


def tile_shape(block: int) -> tuple[int, int]:
    """The squarest (th, tw) with th * tw == block, th <= tw."""
    th = max(d for d in range(1, math.isqrt(block) + 1) if block % d == 0)
    return th, block // th


def invert(order: torch.Tensor) -> torch.Tensor:
    """The inverse of a permutation along the last dim."""
    inv = torch.empty_like(order)
    inv.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order).contiguous())
    return inv


def gather_tokens(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x (B, H, L, D) reordered along L by `order` ((L,) shared, or (B, H, L))."""
    if order.dim() == 1:
        return x.index_select(2, order)
    return x.gather(2, order.unsqueeze(-1).expand(*order.shape, x.shape[-1]))
