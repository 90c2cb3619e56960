"""DraftAttention, "Fast Video Diffusion via Low-Resolution Attention Guidance": a low-resolution draft attention map
from average-pooled queries and keys picks the blocks, and the tokens are reordered so each block is one compact
spatial patch of a frame (th x tw tokens) instead of a strip of one image row; kept blocks are then dense in the
kernel and the output is put back in the original order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..blocks import block_lengths, diagonal, gather_tokens, n_blocks, pool_mean, select, tile_order, tile_shape
from .base import MaskPolicy, PolicyInput, PolicyParams, Selection, register_policy


@dataclass(frozen=True)
class DraftParams(PolicyParams):
    """reorder: lay tokens out patch by patch before pooling (DraftAttention's reordering); off pools row strips."""

    reorder: bool = True


def draft_log_mass(q: torch.Tensor, k: torch.Tensor, block: int, scale: float) -> torch.Tensor:
    """The draft map: log softmax mass of each pooled key cell for each pooled query cell, (B, H, nq, nk)."""
    scores = torch.einsum("bhqd,bhnd->bhqn", pool_mean(q, block), pool_mean(k, block)) * scale
    return torch.log_softmax(scores + block_lengths(k.shape[2], block, q.device).log(), dim=-1)


@register_policy
class DraftPolicy(MaskPolicy):
    name = "draft"
    Params = DraftParams
    description = "DraftAttention: pooled low-res attention map, top-k/top-p blocks, patch-wise token reordering"

    def select(self, inp: PolicyInput) -> Selection:
        order = tile_order(inp.grid, tile_shape(inp.block), inp.q.device) if self.params.reorder else None
        q, k = (inp.q, inp.k) if order is None else (gather_tokens(inp.q, order), gather_tokens(inp.k, order))
        log_mass = draft_log_mass(q, k, inp.block, inp.scale)
        force = diagonal(n_blocks(q.shape[2], inp.block), n_blocks(k.shape[2], inp.block), q.device)
        return Selection(select(log_mass, inp.budget, force), q_order=order, k_order=order)
