"""Bench methods of forecasting, at two compute budgets: about 4x (the plain name) and about 6x (`-6x`).

The interval is chosen from `--steps` so every method of a budget runs the same number of model computes: 20 steps
give 4.00x and 6.67x (5 and 3 computes), 50 steps (the official TaylorSeer settings' schedule) 3.57x and 6.25x
(14 and 8 computes).
CG-Taylor runs its first block on every step (on the cond rows, under the bench's CFG), so at a budget it gets the
interval whose speedup, probes included, is nearest the others' (sized for the reference model's blocks), with
threshold 1: it trusts every probe.
"""
from __future__ import annotations

from ..accel.caching import BlockCacheConfig, BlockCachePatch
from ..accel.forecasting.methods import ForecastSettings
from ..accel.caching.schedule import compute_budget
from ..reference.wan_dit import WanConfig
from .methods import BenchMethod, register_method

TARGETS = {"": 4.0, "-6x": 6.0}
REFERENCE_BLOCKS = WanConfig().num_layers  # the bundled reference model's depth: what a CG-Taylor probe costs

_DESCRIPTIONS = {
    "taylorseer": "TaylorSeer: 1st-order Taylor forecast of the model output",
    "spectrum": "Spectrum: Chebyshev ridge fit of the output, blended with the Taylor term",
    "spectrum-plan": "ours: spectral fit, computes placed by a forecast-error plan over the sigma schedule",
    "reuse": "plain reuse of the last computed model output (order 0): the baseline every forecaster must beat",
}


def even_speedup(steps: int, interval: int) -> float:
    return steps / compute_budget(steps, interval)


def interval_for(steps: int, target: float) -> int:
    """The interval whose even schedule's compute speedup on `steps` steps is nearest `target` (ties: slower)."""
    return min(range(1, steps + 1), key=lambda iv: (abs(even_speedup(steps, iv) - target), even_speedup(steps, iv)))


def cg_speedup(steps: int, interval: int, blocks: int = REFERENCE_BLOCKS, probe_share: float = 0.5) -> float:
    """Block speedup of CG-Taylor trusting every probe: the model runs on step 0, every `interval` steps and the
    final step; on every other step the first block runs on `probe_share` of the rows (the bench's CFG: the cond
    half)."""
    computes = len(set(range(0, steps, interval)) | {steps - 1})
    return steps * blocks / (computes * blocks + (steps - computes) * probe_share)


def cg_interval_for(steps: int, target: float) -> int:
    goal = even_speedup(steps, interval_for(steps, target))
    return min(range(1, steps + 1), key=lambda iv: (abs(cg_speedup(steps, iv) - goal), cg_speedup(steps, iv)))


def engine_reuse(interval: int) -> BlockCachePatch:
    """The caching engine's plain reuse of the stack's residual, computing on the even schedule of `interval`."""
    return BlockCachePatch(BlockCacheConfig(gate="static", interval=interval, max_consecutive=interval))


def _register(name: str, settings, description: str) -> None:
    """`settings`: steps -> ForecastSettings."""
    register_method(BenchMethod(name, description, lambda steps, s=settings: [s(steps).patch()]))


for _suffix, _target in TARGETS.items():
    for _method, _text in _DESCRIPTIONS.items():
        _name, _order = ("taylorseer", 0) if _method == "reuse" else (_method, 1)
        _register(f"{_method}{_suffix}",
                  lambda steps, m=_name, o=_order, t=_target: ForecastSettings(m, interval=interval_for(steps, t),
                                                                               order=o),
                  f"{_text}, ~{_target:g}x")
    _register(f"cg-taylor{_suffix or '-4x'}",
              lambda steps, t=_target: ForecastSettings("cg-taylor", interval=cg_interval_for(steps, t),
                                                        threshold=1.0),
              f"CG-Taylor: first block every step, output forecast, threshold 1, nearest ~{_target:g}x with probes")
    register_method(BenchMethod(
        f"blockcache-reuse{_suffix or '-4x'}",
        f"the caching engine's plain reuse (order 0) of the block stack's residual, computes as the forecasters', "
        f"~{_target:g}x",
        lambda steps, t=_target: [engine_reuse(interval_for(steps, t))]))
_register("cg-taylor", lambda steps: ForecastSettings("cg-taylor", interval=5, threshold=0.1),
          "CG-Taylor: first block every step, its forecast error gates the output forecast, threshold 0.1")
_register("cg-taylor-stack", lambda steps: ForecastSettings("cg-taylor", interval=5, threshold=0.1,
                                                            granularity="stack"),
          "CG-Taylor on its own target, the stack's residual after the first block, threshold 0.1")
_register("taylorseer-stack", lambda steps: ForecastSettings("taylorseer", interval=interval_for(steps, 4.0),
                                                             granularity="stack"),
          "TaylorSeer on the block stack's residual, ~4x (blocks only: embedder and head still run)")
_register("taylorseer-block", lambda steps: ForecastSettings("taylorseer", interval=interval_for(steps, 4.0),
                                                             granularity="block"),
          "TaylorSeer on each block's residual, ~4x (blocks only)")
