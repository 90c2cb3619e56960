"""Planning a calibration run: which layers' statistics to collect in each pass over the calibration prompts.

GPTQ needs each layer's input Gram matrix (K x K fp32 floats, or K x B diagonal blocks for a layer wider than one
Hessian, `gptq.hessian_block`). On a small model all of them fit at once; on Flux or Wan 14B they do not (tens of
GiB), so the layers are split into passes whose Gram matrices fit a memory budget and the caller re-runs its few
calibration steps once per pass. `PassCalibration` hands the quantizer one pass at a time and drops each pass's
matrices before the next, so the whole calibrate-and-quantize route holds one pass's at once.
"""
from __future__ import annotations

import logging
from typing import Callable

from torch import nn

from .api import collect_channel_stats, target_layers
from .gptq import hessian_block
from .rotation import ChannelStats

log = logging.getLogger("dit_accel")

DEFAULT_GRAM_BUDGET = 4 << 30  # bytes of Gram matrices held at once (CPU memory)


def gram_bytes(in_features: int) -> int:
    """One layer's Gram matrix as calibration keeps it: K x K fp32, or K x B for a layer split into Hessian blocks
    of B channels (`gptq.hessian_block`)."""
    return in_features * hessian_block(in_features) * 4


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


class PassCalibration:
    """Calibration statistics one pass at a time, collected when the quantizer first asks for a layer of the pass
    (`get`, as a dict's): the previous pass's Gram matrices are dropped first, so what is held at once stays one
    pass's (`budget_bytes`), however many layers the model has. The quantizer walks the layers in model order, so
    each pass runs once; asking out of order re-runs a pass (slower, same statistics)."""

    def __init__(self, model: nn.Module, run: Callable[[], None], gram: bool = True, budget_bytes: int | None = None,
                 name: str = "calibration"):
        budget_bytes = DEFAULT_GRAM_BUDGET if budget_bytes is None else budget_bytes
        layers = [(n, linear.in_features) for n, linear in target_layers(model)]
        self.passes = gram_passes(layers, budget_bytes) if gram else [[n for n, _ in layers]]
        self._pass_of = {n: i for i, names in enumerate(self.passes) for n in names}
        self._model, self._run, self._gram = model, run, gram
        self._current, self._stats = -1, {}
        self.runs = 0
        split = sum(1 for _, k in layers if hessian_block(k) < k) if gram else 0
        log.info("%s: %d layers in %d pass%s (Gram matrices held at once: at most %.2f GiB)%s", name, len(layers),
                 len(self.passes), "" if len(self.passes) == 1 else "es", budget_bytes / 2 ** 30,
                 f"; {split} layers too wide for one Hessian calibrate on diagonal Hessian blocks" if split else "")

    def __bool__(self) -> bool:
        return True

    def get(self, name: str, default=None) -> ChannelStats | None:
        index = self._pass_of.get(name)
        if index is None:
            return default
        if index != self._current:
            self._collect(index)
        return self._stats[name]

    def _collect(self, index: int) -> None:
        self._stats, self._current = {}, -1  # release the last pass's Gram matrices before the next run
        wanted = set(self.passes[index])
        with collect_channel_stats(self._model, lambda n, m: n in wanted, gram=self._gram) as collected:
            self._run()
        self.runs += 1
        unseen = [n for n, s in collected.items() if not s.tokens]
        if unseen:
            raise RuntimeError(f"calibration never reached {len(unseen)} layers (e.g. {unseen[0]}); another patch "
                               "may replace the blocks: quantize before other dit-accel or caching nodes")
        self._stats, self._current = collected, index


def calibrate(model: nn.Module, run: Callable[[], None], gram: bool = True, budget_bytes: int | None = None,
              name: str = "calibration") -> dict[str, ChannelStats]:
    """Every target layer's input statistics of `model` while `run()` samples with it (the node: ComfyUI's
    KSampler; the bench: the reference sampler), once per pass of `gram_passes` (each pass's Gram matrices inside
    `budget_bytes`, DEFAULT_GRAM_BUDGET when None). All of them are returned, so all are held at the end: for a
    model whose Gram matrices do not fit at once, quantize from a `PassCalibration` instead."""
    lazy = PassCalibration(model, run, gram, budget_bytes, name)
    return {n: lazy.get(n) for names in lazy.passes for n in names}
