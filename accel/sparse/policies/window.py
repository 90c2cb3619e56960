"""A spatial-temporal local window: each tile of a frame attends the tiles within `spatial` tiles around it, in the
frames within `temporal` frames (video); the classic locality prior (radial / sliding-tile attention). Static."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..blocks import tile_order, tile_shape
from .base import MaskPolicy, PolicyInput, PolicyParams, Selection, register_policy
from .static import pattern_mask, radius_for


@dataclass(frozen=True)
class WindowParams(PolicyParams):
    """spatial: window radius in tiles (-1: the smallest meeting the sparsity budget); temporal: radius in frames."""

    spatial: int = -1
    temporal: int = 1


def _window(temporal: int):
    def pattern(a: torch.Tensor, b: torch.Tensor, radius: int) -> torch.Tensor:
        near_time = (a[:, None, 0] - b[None, :, 0]).abs() <= temporal
        near_space = ((a[:, None, 1:] - b[None, :, 1:]).abs() <= radius).all(-1)
        return near_time & near_space
    return pattern


@register_policy
class WindowPolicy(MaskPolicy):
    name = "window"
    Params = WindowParams
    description = "spatial-temporal local window over tiles; static"

    def select(self, inp: PolicyInput) -> Selection:
        pattern = _window(self.params.temporal)
        radius = self.params.spatial if self.params.spatial >= 0 else \
            radius_for(inp.grid, inp.block, pattern, inp.budget)
        order = tile_order(inp.grid, tile_shape(inp.block), inp.q.device)
        return Selection(pattern_mask(inp.grid, inp.block, pattern, radius, inp.q.device), q_order=order,
                         k_order=order)
