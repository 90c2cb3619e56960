"""Planning a calibration run: which layers' statistics to collect in each pass over the calibration prompts.

GPTQ needs each layer's input Gram matrix (K x K fp32 floats). On a small model all of them fit at once; on Flux
(K up to 15360, ~0.9 GiB for one such layer) they do not, so the layers are split into passes whose Gram matrices
fit a memory budget and the caller re-runs its few calibration steps once per pass.
"""
from __future__ import annotations

import logging
from typing import Callable

from torch import nn

from .api import collect_channel_stats, target_layers
from .rotation import ChannelStats

log = logging.getLogger("dit_accel")

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


def calibrate(model: nn.Module, run: Callable[[], None], gram: bool = True, budget_bytes: int | None = None,
              name: str = "calibration") -> dict[str, ChannelStats]:
    """Per-layer input statistics of `model`'s target layers while `run()` samples with it (the node: ComfyUI's
    KSampler; the bench: the reference sampler), once per pass of `gram_passes` so the Gram matrices held at once
    stay inside `budget_bytes` (DEFAULT_GRAM_BUDGET when None). The log line says how many passes it took."""
    budget_bytes = DEFAULT_GRAM_BUDGET if budget_bytes is None else budget_bytes
    layers = [(n, linear.in_features) for n, linear in target_layers(model)]
    passes = gram_passes(layers, budget_bytes) if gram else [[n for n, _ in layers]]
    log.info("%s: %d layers in %d pass%s (Gram matrices held at once: at most %.2f GiB)", name, len(layers),
             len(passes), "" if len(passes) == 1 else "es", budget_bytes / 2 ** 30)
    stats: dict[str, ChannelStats] = {}
    for names in passes:
        wanted = set(names)
        with collect_channel_stats(model, lambda n, m: n in wanted, gram=gram) as collected:
            run()
        stats.update(collected)
    unseen = [n for n, s in stats.items() if not s.tokens]
    if unseen:
        raise RuntimeError(f"calibration never reached {len(unseen)} layers (e.g. {unseen[0]}); another patch may "
                           "replace the blocks: quantize before other dit-accel or caching nodes")
    return stats
