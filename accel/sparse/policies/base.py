"""What a mask policy is: it looks at one attention call's image tokens and decides which key blocks each query block
visits, plus (optionally) an estimate of what the skipped blocks contribute and a token order. It never computes the
attention itself: the kernel (`kernels/block_sparse`) does, from the policy's `Selection` only.

Policies register by name (`@register_policy`); each has a frozen `Params` dataclass of its own knobs, with defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch

from ....kernels.block_sparse import BlockLayout, SoftmaxCorrection, layout_from_mask
from ..blocks import Budget, Grid


@dataclass(frozen=True)
class PolicyInput:
    """One call's image tokens, (B, H, L, D), plus what the policy may use to decide."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    grid: Grid             # L == grid.tokens
    block: int             # block size along queries and keys
    budget: Budget
    scale: float           # the softmax scale (head_dim ** -0.5)


@dataclass(frozen=True)
class Selection:
    """A policy's answer. `mask` (bool [B|1, H|1, n_q_blocks, n_k_blocks]) is over the tokens in `order` (if given):
    the patch reorders q, k, v by `q_order` / `k_order` ((L,) shared or (B, H, L)), runs the kernel, and puts the
    output rows back. `correction` rows are in the reordered query order too. `estimate_cost`: what computing the
    correction cost, as a fraction of the dense attention's multiply-adds (reported, never hidden in the sparsity)."""

    mask: torch.Tensor
    correction: SoftmaxCorrection | None = None
    q_order: torch.Tensor | None = None
    k_order: torch.Tensor | None = None
    estimate_cost: float = 0.0

    def layout(self, block: int) -> BlockLayout:
        return layout_from_mask(self.mask, block, block)

    @property
    def density(self) -> torch.Tensor:
        """Visited share of the block pairs (a 0-d tensor; no host sync)."""
        return self.mask.float().mean()


@dataclass(frozen=True)
class PolicyParams:
    """Base of each policy's knobs (empty for a policy without any)."""


class MaskPolicy:
    name: ClassVar[str] = "policy"
    Params: ClassVar[type[PolicyParams]] = PolicyParams
    description: ClassVar[str] = ""

    def __init__(self, params: PolicyParams | None = None):
        params = self.Params() if params is None else params
        if not isinstance(params, self.Params):
            raise TypeError(f"policy {self.name!r} takes {self.Params.__name__}, got {type(params).__name__}")
        self.params = params

    def select(self, inp: PolicyInput) -> Selection:
        raise NotImplementedError


POLICIES: dict[str, type[MaskPolicy]] = {}


def register_policy(cls: type[MaskPolicy]) -> type[MaskPolicy]:
    POLICIES[cls.name] = cls
    return cls


def make_policy(name: str, **params) -> MaskPolicy:
    """The policy `name` with its Params built from keyword arguments (unknown keys are an error naming the valid)."""
    if name not in POLICIES:
        raise ValueError(f"unknown sparse-attention policy {name!r}; available: {', '.join(sorted(POLICIES))}")
    cls = POLICIES[name]
    valid = {f.name for f in fields(cls.Params)}
    unknown = set(params) - valid
    if unknown:
        raise ValueError(f"policy {name!r} has no setting(s) {sorted(unknown)}; its settings: {sorted(valid) or 'none'}")
    return cls(cls.Params(**params))
