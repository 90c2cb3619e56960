"""The full mask: every query block visits every key block. Equals dense attention (the exact setting)."""
from __future__ import annotations

import torch

from ..blocks import n_blocks
from .base import MaskPolicy, PolicyInput, Selection, register_policy


@register_policy
class DensePolicy(MaskPolicy):
    name = "dense"
    description = "every block (exact; for checks and A/B runs)"

    def select(self, inp: PolicyInput) -> Selection:
        n = n_blocks(inp.q.shape[2], inp.block)
        return Selection(torch.ones(1, 1, n, n, dtype=torch.bool, device=inp.q.device))
