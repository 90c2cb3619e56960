"""GRAT, "Grouping First, Attending Smartly": contiguous token groups (tiles of a frame) share one key set, restricted
to a structured region around the group: the criss-cross of tiles in the group's tile row and tile column
(`pattern="criss-cross"`, within `radius` tiles across them), or the surrounding tiles (`pattern="surround"`).
Content-independent: no scores are computed, the layout is built once per grid."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..blocks import tile_order, tile_shape
from .base import MaskPolicy, PolicyInput, PolicyParams, Selection, register_policy
from .static import pattern_mask, radius_for


def criss_cross(a: torch.Tensor, b: torch.Tensor, radius: int) -> torch.Tensor:
    """Same frame, and within `radius` tile rows or within `radius` tile columns (a cross of bands)."""
    same_frame = a[:, None, 0] == b[None, :, 0]
    row_band = (a[:, None, 1] - b[None, :, 1]).abs() <= radius
    col_band = (a[:, None, 2] - b[None, :, 2]).abs() <= radius
    return same_frame & (row_band | col_band)


def surround(a: torch.Tensor, b: torch.Tensor, radius: int) -> torch.Tensor:
    """Tiles within `radius` in every direction (space; frames within `radius` too)."""
    return ((a[:, None, :] - b[None, :, :]).abs() <= radius).all(-1)


PATTERNS = {"criss-cross": criss_cross, "surround": surround}


@dataclass(frozen=True)
class GratParams(PolicyParams):
    """pattern: "criss-cross" or "surround"; radius in tiles (-1: the smallest meeting the sparsity budget)."""

    pattern: str = "criss-cross"
    radius: int = -1

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise ValueError(f"GRAT pattern must be one of {sorted(PATTERNS)}, got {self.pattern!r}")


@register_policy
class GratPolicy(MaskPolicy):
    name = "grat"
    Params = GratParams
    description = "GRAT: tile groups share a criss-cross (or surrounding) key region; static"

    def select(self, inp: PolicyInput) -> Selection:
        pattern = PATTERNS[self.params.pattern]
        radius = self.params.radius if self.params.radius >= 0 else \
            radius_for(inp.grid, inp.block, pattern, inp.budget)
        order = tile_order(inp.grid, tile_shape(inp.block), inp.q.device)
        return Selection(pattern_mask(inp.grid, inp.block, pattern, radius, inp.q.device), q_order=order,
                         k_order=order)

