"""Settings of the sparse-attention patch (the policy's own knobs live in its `Params`)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ...kernels.block_sparse import BACKENDS
from .blocks import Budget
from .policies import POLICIES, PolicyParams, make_policy
from .policies.base import MaskPolicy

ALLOCATIONS = ("uniform", "calibrated")


@dataclass(frozen=True)
class SparseAttentionConfig:
    """Block-sparse self-attention of image/video tokens (text tokens and cross-attention always stay dense).

    policy: a name from `policies.POLICIES` ("pisa", "sol-attn", "draft", "cluster", "grat", "window", "dense").
    sparsity: target fraction of key blocks each query block skips (top-k policies; static patterns pick the radius
        that gets closest without exceeding it). 0 with the "dense" policy is the exact setting.
    top_p: if set, a dynamic budget instead: keep the fewest blocks holding this share of the estimated attention mass
        (pisa, draft, cluster).
    block_size: tokens per query and key block (a power of two from 16 to 256 for the Triton kernel).
    warmup_steps: the first steps run dense: early steps set the layout of the picture.
    dense_layers: block positions (0-based, in the model's block loop) that always run dense.
    min_tokens: image sequences shorter than this run dense (there is nothing to gain); at least 2 blocks are needed.
    params: the policy's own settings (its `Params` dataclass); None uses the policy's defaults.
    backend: "auto" (Triton kernel where it can run, else the torch reference with one warning), "triton", "torch".
    allocation: "uniform" (every layer skips `sparsity`) or "calibrated" (per-layer budgets with the same mean,
        measured on the last warm-up step: layers whose error grows fastest keep more blocks; see allocation.py).
    """

    policy: str = "pisa"
    sparsity: float = 0.5
    top_p: float | None = None
    block_size: int = 64
    warmup_steps: int = 2
    dense_layers: tuple[int, ...] = ()
    min_tokens: int = 0
    params: PolicyParams | None = None
    backend: str = "auto"
    allocation: str = "uniform"

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"unknown sparse-attention policy {self.policy!r}; available: {', '.join(sorted(POLICIES))}")
        Budget(self.sparsity, self.top_p)  # validates both
        if self.block_size < 1 or self.warmup_steps < 0 or self.min_tokens < 0:
            raise ValueError("block_size must be >= 1; warmup_steps and min_tokens >= 0")
        if any(i < 0 for i in self.dense_layers):
            raise ValueError(f"dense_layers are block positions >= 0, got {self.dense_layers}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        sub_block = getattr(self.params, "sub_block", 0)
        if sub_block and self.block_size % sub_block:
            raise ValueError(f"the estimate's key groups (sub_block {sub_block}) must divide block_size "
                             f"{self.block_size}: pick a power of two up to the block size")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")
        if self.allocation == "calibrated" and (self.top_p is not None or self.warmup_steps < 1):
            raise ValueError("the calibrated allocation measures each layer on the last dense warm-up step and "
                             "splits a sparsity target: set warmup_steps >= 1 and no top_p, or use 'uniform'")
        if self.params is not None and not isinstance(self.params, POLICIES[self.policy].Params):
            raise ValueError(f"policy {self.policy!r} takes {POLICIES[self.policy].Params.__name__} settings, got "
                             f"{type(self.params).__name__}")

    @property
    def budget(self) -> Budget:
        return Budget(self.sparsity, self.top_p)

    def make_policy(self) -> MaskPolicy:
        cls = POLICIES[self.policy]
        return cls(self.params) if self.params is not None else make_policy(self.policy)

    def describe(self) -> str:
        budget = f"top-p {self.top_p:g}" if self.top_p is not None else f"target {self.sparsity:.0%}"
        allocation = ", per-layer budgets calibrated" if self.allocation == "calibrated" else ""
        return f"{self.policy}, {budget}{allocation}, block {self.block_size}, {self.warmup_steps} dense warm-up steps"


def parse_layers(text: str) -> tuple[int, ...]:
    """'0, 1, 30-39' -> (0, 1, 30, ..., 39): block positions written the way ComfyUI core's sparse node takes them."""
    layers: set[int] = set()
    for part in re.split(r"[,\s]+", (text or "").strip()):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise ValueError(f"dense layers must look like '0, 1, 30-39' (block numbers and ranges), got {part!r}")
        a, b = int(match.group(1)), int(match.group(2) or match.group(1))
        layers.update(range(min(a, b), max(a, b) + 1))
    return tuple(sorted(layers))
