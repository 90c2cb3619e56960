"""The registry of benchmark methods: a name, what it is, and how to build its patches for a schedule.

Each later method (caching, forecasting, sparse attention, guidance, quantization) registers itself here with
`register_method`, and `--list` shows it; `none` runs the dit-accel plumbing with no patch at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..accel.caching import LEVELS, BlockCacheConfig, BlockCachePatch, preset
from ..accel.patch import DiTPatch


@dataclass(frozen=True)
class BenchMethod:
    name: str
    description: str
    build: Callable[[int], list[DiTPatch]]   # number of steps -> the patches to apply
    # Optional parts for methods that are more than patches; each is None for a pure patch method.
    # The model the method samples with, made once per process from the full model (e.g. quantized weights).
    prepare_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None
    # number of steps -> a post-CFG function for `sample_euler_cfg` (e.g. perturbation guidance's extra branch)
    post_cfg: Callable[[int], Callable[[dict], torch.Tensor]] | None = None
    # (full model, method's model) -> extra result fields (e.g. {"weight_bytes_ratio": ...})
    report: Callable[[torch.nn.Module, torch.nn.Module], dict] | None = None
    # () -> why the method cannot run here (e.g. an optional library is missing), or None; such rows are skipped
    unavailable: Callable[[], str | None] | None = None


METHODS: dict[str, BenchMethod] = {}


def register_method(method: BenchMethod) -> BenchMethod:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> BenchMethod:
    if name not in METHODS:
        raise SystemExit(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))} (see --list)")
    return METHODS[name]


register_method(BenchMethod("none", "the dit-accel host with no patch: must equal the unpatched model exactly",
                            lambda steps: []))


def _block_cache(config: BlockCacheConfig) -> Callable[[int], list[DiTPatch]]:
    return lambda steps: [BlockCachePatch(config)]


register_method(BenchMethod("blockcache", "block cache, balanced preset (block gate, 2nd-order forecast, at most 3 skips in a row)",
                            _block_cache(preset("wan", "balanced"))))
for _level in (lvl for lvl in LEVELS if lvl != "balanced"):  # balanced is `blockcache`
    register_method(BenchMethod(f"blockcache-{_level}", f"block cache, {_level} preset",
                                _block_cache(preset("wan", _level))))
register_method(BenchMethod("blockcache-firstblock", "block cache, first-block gate (FBCache-style), stack reuse",
                            _block_cache(BlockCacheConfig(gate="first_block", threshold=0.3, max_consecutive=2))))
register_method(BenchMethod("blockcache-static", "block cache, static schedule: compute every 2nd step, reuse",
                            _block_cache(BlockCacheConfig(gate="static", interval=2))))
register_method(BenchMethod("blockcache-reuse", "block cache, block gate, plain residual reuse (no forecast)",
                            _block_cache(BlockCacheConfig(gate="block", threshold=1.0, max_consecutive=2))))


# Each capability registers its methods in its own module, imported here so `--list` shows them all.
from . import methods_forecast, methods_guidance, methods_quant, methods_sparse  # noqa: E402,F401


def _degraded(level: str) -> BlockCacheConfig:
    """The preset after the memory budget's granularity rung, the one video shapes take (README, real scale)."""
    from ..accel.caching.budget import ladder
    rung = dict(ladder(torch.bfloat16, torch.device("cpu")))["static schedule on the block stack's residual "
                                                             "instead of each block's"]
    return rung(preset("wan", level))


for _level in LEVELS:
    register_method(BenchMethod(f"blockcache-{_level}-stack", f"block cache {_level} preset as the memory budget "
                                "degrades it on video: static schedule, the block stack's residual",
                                _block_cache(_degraded(_level))))
