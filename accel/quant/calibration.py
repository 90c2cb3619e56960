"""Planning a calibration run: which layers' statistics to collect in each pass over the calibration prompts.

GPTQ needs each layer's input Gram matrix (K x K fp32 floats). On a small model all of them fit at once; on Flux
(K up to 15360, ~0.9 GiB for one such layer) they do not, so the layers are split into passes whose Gram matrices
fit a memory budget and the caller re-runs its few calibration steps once per pass.
"""
from __future__ import annotations

DEFAULT_GRAM_BUDGET = 4 << 30  # bytes of Gram matrices held at once (CPU memory)


def gram_bytes(in_features: int) -> int:
    return in_features * in_features * 4


def gram_passes(layers: list[tuple[str, int]], budget_bytes: int = DEFAULT_GRAM_BUDGET) -> list[list[str]]:
    """Split (name, in_features) layers, in order, into passes of at most `budget_bytes` of Gram matrices (a layer
    larger than the budget gets a pass of its own)."""
    if budget_bytes <= 0:
        raise ValueError(f"budget_bytes must be positive, got {budget_bytes}")
    passes: list[list[str]] = []
    used = budget_bytes + 1
    for name, width in layers:
        size = gram_bytes(width)
        if used + size > budget_bytes:
            passes.append([])
            used = 0
        passes[-1].append(name)
        used += size
    return passes
