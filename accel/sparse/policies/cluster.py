"""Sparse VideoGen2, "Semantic-Aware Permutation": k-means clusters of the queries and of the keys, tokens permuted
so each cluster is contiguous, a top-p budget over cluster-pair scores, and the output permuted back. Semantically
close tokens (the same object anywhere in the frame) share blocks, which positional blocks cannot do.

Blocks have a fixed size here (the kernel's), so a block can straddle two clusters: a block pair is visited when any
of the cluster pairs it covers is selected.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..blocks import Budget, gather_tokens, keep_top_p, n_blocks, row_block
from .base import MaskPolicy, PolicyInput, PolicyParams, Selection, register_policy


@dataclass(frozen=True)
class ClusterParams(PolicyParams):
    """clusters: k-means clusters for queries and for keys (0: one per block); iterations: Lloyd steps."""

    clusters: int = 0
    iterations: int = 8

    def __post_init__(self):
        if self.clusters < 0 or self.iterations < 1:
            raise ValueError("clusters must be >= 0 and iterations >= 1")


def kmeans(x: torch.Tensor, clusters: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched k-means over (B, H, L, D) (cosine-free, plain L2), seeded with evenly spaced tokens.
    Returns (labels (B, H, L) long, centroids (B, H, C, D))."""
    b, h, l, d = x.shape
    x = x.float()
    seeds = torch.linspace(0, l - 1, clusters, device=x.device).round().long()
    centroids = x.index_select(2, seeds)
    for _ in range(iterations):
        dist = (x.pow(2).sum(-1, keepdim=True) - 2 * x @ centroids.transpose(-1, -2)
                + centroids.pow(2).sum(-1).unsqueeze(-2))
        labels = dist.argmin(-1)
        sums = torch.zeros(b, h, clusters, d, device=x.device).scatter_add_(2, labels.unsqueeze(-1).expand(-1, -1, -1, d), x)
        counts = torch.zeros(b, h, clusters, device=x.device).scatter_add_(2, labels, torch.ones_like(labels, dtype=x.dtype))
        centroids = torch.where(counts.unsqueeze(-1) > 0, sums / counts.clamp_min(1).unsqueeze(-1), centroids)
    dist = (x.pow(2).sum(-1, keepdim=True) - 2 * x @ centroids.transpose(-1, -2) + centroids.pow(2).sum(-1).unsqueeze(-2))
    return dist.argmin(-1), centroids


def _block_covers(sorted_labels: torch.Tensor, clusters: int, block: int) -> torch.Tensor:
    """Float (B, H, n_blocks, C): 1 where the block (of the cluster-sorted tokens) holds a token of the cluster."""
    b, h, l = sorted_labels.shape
    covers = torch.zeros(b, h, n_blocks(l, block), clusters, device=sorted_labels.device)
    rows = row_block(l, block, sorted_labels.device).expand(b, h, -1)
    flat = rows * clusters + sorted_labels
    covers.view(b, h, -1).scatter_(2, flat, 1.0)
    return covers


@register_policy
class ClusterPolicy(MaskPolicy):
    name = "cluster"
    Params = ClusterParams
    description = "Sparse VideoGen2: k-means semantic permutation, top-p over cluster scores"

    def select(self, inp: PolicyInput) -> Selection:
        p: ClusterParams = self.params
        q, k, blk = inp.q, inp.k, inp.block
        clusters = min(p.clusters or n_blocks(q.shape[2], blk), q.shape[2])
        q_labels, q_centroids = kmeans(q, clusters, p.iterations)
        k_labels, k_centroids = kmeans(k, clusters, p.iterations)
        k_sizes = torch.zeros(*k_labels.shape[:2], clusters, device=k.device).scatter_add_(
            2, k_labels, torch.ones_like(k_labels, dtype=torch.float32))
        scores = torch.einsum("bhad,bhcd->bhac", q_centroids, k_centroids) * inp.scale + k_sizes.clamp_min(1e-30).log().unsqueeze(2)
        share = torch.softmax(scores, dim=-1)                         # (B, H, Cq, Ck): estimated mass per pair
        chosen = keep_top_p(share, inp.budget.top_p) if inp.budget.top_p is not None else \
            _keep_token_share(share, k_sizes, 1.0 - inp.budget.sparsity)
        q_order, k_order = q_labels.argsort(dim=-1, stable=True), k_labels.argsort(dim=-1, stable=True)
        q_cover = _block_covers(q_labels.gather(2, q_order), clusters, blk)
        k_cover = _block_covers(k_labels.gather(2, k_order), clusters, blk)
        mask = (q_cover @ chosen.float() @ k_cover.transpose(-1, -2)) > 0
        return Selection(mask, q_order=q_order, k_order=k_order)


def _keep_token_share(share: torch.Tensor, sizes: torch.Tensor, keep: float) -> torch.Tensor:
    """Keep the highest-mass key clusters until they hold `keep` of the key tokens (a sparsity target)."""
    order = share.argsort(-1, descending=True)
    sorted_sizes = sizes.unsqueeze(2).expand_as(share).gather(-1, order)
    before = (sorted_sizes.cumsum(-1) - sorted_sizes) / sizes.sum(-1).view(*sizes.shape[:2], 1, 1)
    keep_sorted = before < keep
    keep_sorted[..., 0] = True
    return torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
