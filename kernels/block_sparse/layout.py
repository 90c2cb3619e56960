"""Which key blocks each query block visits, and what the skipped ones are estimated to contribute.

A `BlockLayout` is the only thing a mask policy hands to the kernel: per (batch, head, query block) a list of key-block
ids (valid entries first) and how many of them are valid. A `SoftmaxCorrection` is PISA's estimate of the skipped
keys' share of the softmax, merged into the same online softmax as the visited blocks.

Merge rule (per query row i, scores s_ij already include the softmax scale):

    M     = max(max over visited j of s_ij, shift_i)
    out_i = (sum_visited exp(s_ij - M) v_j + numerator_i exp(shift_i - M))
          / (sum_visited exp(s_ij - M)     + denominator_i exp(shift_i - M))

A query block that visits no key block gets numerator / denominator alone; a row whose denominator is then zero (no
visited block and no correction, or a zero correction) gets zeros rather than NaN.

The batch and head dimensions of a layout may be 1 and are then shared by every batch entry / head. Layout tensors
may be broadcast views (see `dense_layout`): treat them as read-only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BlockLayout:
    kv_indices: torch.Tensor  # int32 [B, H, n_q_blocks, max_kv]: key-block ids to visit, valid entries first
    kv_counts: torch.Tensor   # int32 [B, H, n_q_blocks]: how many leading entries of kv_indices are valid
    block_q: int
    block_k: int
    n_k_blocks: int           # key blocks in the key sequence: ceil(k_len / block_k)

    def __post_init__(self):
        if self.kv_indices.dtype != torch.int32 or self.kv_counts.dtype != torch.int32:
            raise ValueError(f"BlockLayout: kv_indices and kv_counts must be int32, got {self.kv_indices.dtype} and "
                             f"{self.kv_counts.dtype} (build layouts with layout_from_mask / dense_layout)")
        if self.kv_indices.dim() != 4 or self.kv_counts.shape != self.kv_indices.shape[:3]:
            raise ValueError(f"BlockLayout: kv_indices must be [B, H, n_q_blocks, max_kv] and kv_counts its first "
                             f"three dims, got {tuple(self.kv_indices.shape)} and {tuple(self.kv_counts.shape)}")
        if self.kv_indices.device != self.kv_counts.device:
            raise ValueError("BlockLayout: kv_indices and kv_counts are on different devices")
        if self.block_q <= 0 or self.block_k <= 0 or self.n_k_blocks <= 0:
            raise ValueError(f"BlockLayout: block_q, block_k and n_k_blocks must be positive, got "
                             f"{self.block_q}, {self.block_k}, {self.n_k_blocks}")

    @property
    def n_q_blocks(self) -> int:
        return self.kv_indices.shape[2]

    @property
    def max_kv(self) -> int:
        return self.kv_indices.shape[3]

    @property
    def device(self) -> torch.device:
        return self.kv_indices.device

    def density(self) -> float:
        """Visited blocks / all blocks (1.0 = dense)."""
        total = self.kv_counts.numel() * self.n_k_blocks
        return float(self.kv_counts.sum().item()) / total  # host sync: a reporting call, not on the hot path

    def to(self, device: torch.device | str) -> "BlockLayout":
        return BlockLayout(self.kv_indices.to(device), self.kv_counts.to(device), self.block_q, self.block_k,
                           self.n_k_blocks)

    def check_compatible(self, batch: int, heads: int, q_len: int, k_len: int) -> None:
        """Raise a ValueError naming the mismatch if this layout was not built for these shapes."""
        nqb, nkb = blocks_for(q_len, self.block_q), blocks_for(k_len, self.block_k)
        if self.n_q_blocks != nqb or self.n_k_blocks != nkb:
            raise ValueError(
                f"block layout is for {self.n_q_blocks} query blocks x {self.n_k_blocks} key blocks of "
                f"{self.block_q} x {self.block_k}, but q_len={q_len} / k_len={k_len} need {nqb} x {nkb}: "
                f"rebuild the layout for these lengths")
        lb, lh = self.kv_counts.shape[:2]
        if lb not in (1, batch) or lh not in (1, heads):
            raise ValueError(f"block layout has batch x heads {lb} x {lh}, attention has {batch} x {heads} "
                             f"(a layout dimension may be 1 to be shared)")


@dataclass(frozen=True)
class SoftmaxCorrection:
    """An estimate of what the skipped key blocks contribute, merged into the same online softmax (PISA)."""
    numerator: torch.Tensor    # float32 [B, H, Lq, Dv] ~ sum over skipped keys j of exp(s_ij - shift_i) * v_j
    denominator: torch.Tensor  # float32 [B, H, Lq]     ~ sum over skipped keys j of exp(s_ij - shift_i)
    shift: torch.Tensor        # float32 [B, H, Lq]     log-scale of both sums; s_ij already includes the softmax scale

    def __post_init__(self):
        n, d, s = self.numerator, self.denominator, self.shift
        if n.dim() != 4 or d.shape != n.shape[:3] or s.shape != n.shape[:3]:
            raise ValueError(f"SoftmaxCorrection: numerator must be [B, H, Lq, Dv] and denominator / shift "
                             f"[B, H, Lq], got {tuple(n.shape)}, {tuple(d.shape)}, {tuple(s.shape)}")
        if not (n.is_floating_point() and d.is_floating_point() and s.is_floating_point()):
            raise ValueError("SoftmaxCorrection: numerator, denominator and shift must be floating point")

    def check_compatible(self, batch: int, heads: int, q_len: int, v_dim: int) -> None:
        want = (batch, heads, q_len, v_dim)
        if tuple(self.numerator.shape) != want:
            raise ValueError(f"correction numerator is {tuple(self.numerator.shape)}, the attention needs {want} "
                             f"([B, H, Lq, Dv] of q and v)")


def blocks_for(length: int, block: int) -> int:
    return math.ceil(length / block)


def layout_from_mask(mask: torch.Tensor, block_q: int, block_k: int) -> BlockLayout:
    """A layout visiting exactly the True blocks of a bool [B, H, n_q_blocks, n_k_blocks] mask, in ascending order."""
    if mask.dtype != torch.bool or mask.dim() != 4:
        raise ValueError(f"layout_from_mask wants a bool [B, H, n_q_blocks, n_k_blocks] mask, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    n_k_blocks = mask.shape[-1]
    counts = mask.sum(-1, dtype=torch.int32)
    # A stable sort of ~mask puts the visited ids first, each group still in ascending key order (memory locality).
    order = torch.sort((~mask).to(torch.uint8), dim=-1, stable=True).indices
    max_kv = max(int(counts.max().item()) if counts.numel() else 0, 1)  # host sync: layouts are built once per call
    indices = order[..., :max_kv].to(torch.int32)
    valid = torch.arange(max_kv, device=mask.device) < counts.unsqueeze(-1)
    indices = torch.where(valid, indices, torch.zeros_like(indices))  # past count: 0, any in-range id would do
    return BlockLayout(indices.contiguous(), counts.contiguous(), block_q, block_k, n_k_blocks)


def dense_layout(batch: int, heads: int, q_len: int, k_len: int, block_q: int, block_k: int,
                 device: torch.device | str | None = None) -> BlockLayout:
    """Every query block visits every key block (equals dense attention). The tensors are broadcast views."""
    nqb, nkb = blocks_for(q_len, block_q), blocks_for(k_len, block_k)
    indices = torch.arange(nkb, dtype=torch.int32, device=device).expand(batch, heads, nqb, nkb)
    counts = torch.full((1, 1, 1), nkb, dtype=torch.int32, device=device).expand(batch, heads, nqb)
    return BlockLayout(indices, counts, block_q, block_k, nkb)


def random_layout(batch: int, heads: int, q_len: int, k_len: int, block_q: int, block_k: int, density: float, *,
                  seed: int = 0, device: torch.device | str | None = None) -> BlockLayout:
    """Every query block visits the same number, round(density * n_k_blocks) (at least 1), of distinct key blocks
    drawn uniformly at random, in ascending order: a policy-free layout for tests and the kernel benchmark."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    nqb, nkb = blocks_for(q_len, block_q), blocks_for(k_len, block_k)
    keep = max(1, min(nkb, round(density * nkb)))
    scores = torch.rand(batch, heads, nqb, nkb, generator=torch.Generator().manual_seed(seed))
    indices = scores.topk(keep, dim=-1).indices.sort(dim=-1).values.to(torch.int32)
    counts = torch.full((batch, heads, nqb), keep, dtype=torch.int32)
    return BlockLayout(indices.contiguous().to(device), counts.to(device), block_q, block_k, nkb)


def layout_to_mask(layout: BlockLayout) -> torch.Tensor:
    """The bool [B, H, n_q_blocks, n_k_blocks] mask of visited blocks."""
    idx = layout.kv_indices.long()
    valid = torch.arange(layout.max_kv, device=idx.device) < layout.kv_counts.unsqueeze(-1)
    # Invalid entries go to a spare column that is dropped, so they can never overwrite a visited block.
    idx = torch.where(valid, idx, torch.full_like(idx, layout.n_k_blocks))
    mask = torch.zeros(*idx.shape[:3], layout.n_k_blocks + 1, dtype=torch.bool, device=idx.device)
    mask.scatter_(-1, idx, True)
    return mask[..., :layout.n_k_blocks]
