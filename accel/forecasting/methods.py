"""The forecasting methods users pick by name, with their measured defaults: one place the node and the bench share.

  taylorseer   TaylorSeer: first-order Taylor forecast of the model output on the schedule's step axis, computes
               spread evenly at most `interval` steps apart
  spectrum     Spectrum: Chebyshev ridge fit of the output over the computed steps, blended with the Taylor term as
               the ComfyUI ports of Spectrum do
  cg-taylor    CG-Taylor: the first block runs every step (cond rows only under CFG); its own forecast error
               decides whether the model output is forecast (Taylor; granularity stack: the residual of the blocks
               after the first, CG-Taylor's own target) or the model runs on. One test for both targets:
               `caching.gates.ConfidenceProbe`
  spectrum-plan  ours: Spectrum's fit decides what to emit; when to compute is planned over the sampler's own sigma
               schedule by a forecast-error model (`plan.py`), with the same number of computes as the even
               schedule (the final step is the plan's to drop only with 5 computes or fewer). Unlike CG-Taylor's
               first-block probe it costs no model work, which on models with few blocks eats the speedup (and a
               forecaster-agreement gate measured worse than the even schedule). The node's default.

Measured on the reference model (50 and 20 steps, CFG 4): see the README's forecasting tables.
"""
from __future__ import annotations

import dataclasses

from ..caching.block_cache import BlockCacheConfig, BlockCachePatch
from ..memory import AUTO
from ..patch import DiTPatch
from .confidence_gate import ConfidenceGatedForecastPatch
from .output_forecast import FORECAST_MIN_STEPS, OutputForecastConfig, OutputForecastPatch
from ..caching.predictors import ForecastConfig

TAYLOR = ForecastConfig("taylor", order=1)
# Chebyshev degree 4, ridge 0.03 over the last 6 computed steps, blended 0.85 with the Taylor term: of a sweep over
# blend 0.5-0.85, window 4-10 and degree 2-4 on the reference model, the one setting above TaylorSeer on 20 and 50
# steps at 4x and 6x (pure spectral fits: 24-29 dB at 20 steps, 4x; the blend 0.7 / window 10 / degree 3 of the
# first sweep lost to TaylorSeer on 50 steps: 42.5 vs 44.7 dB at 4.55x).
SPECTRAL = ForecastConfig("spectral_taylor", order=1, degree=4, ridge=0.03, window=6, blend=0.85)

METHODS = ("taylorseer", "spectrum", "cg-taylor", "spectrum-plan")


@dataclasses.dataclass(frozen=True)
class ForecastSettings:
    """What the DiT Forecast node exposes; `patch()` builds the method's patch from it."""

    method: str = "taylorseer"
    interval: int = 5             # longest stretch between computes
    threshold: float = 0.1        # cg-taylor: confidence threshold (README, forecasting: 2.28x at 39.9 dB on 20 steps)
    order: int = 1                # Taylor order
    degree: int = SPECTRAL.degree  # Chebyshev degree
    start_percent: float = 0.0
    end_percent: float = 1.0
    warmup_steps: int = 1
    final_steps: int | None = None  # None: the method's default (1; 0 for spectrum-plan: its plan decides)
    granularity: str = "model"    # model (output), stack or block (taylorseer / spectrum)
    memory_gib: float = AUTO      # state budget: -1 auto, 0 no limit, else GiB (accel/memory.py)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.granularity not in ("model", "stack", "block"):
            raise ValueError(f"granularity must be model, stack or block, got {self.granularity!r}")

    @property
    def forced_final_steps(self) -> int:
        if self.final_steps is not None:
            return self.final_steps
        return 0 if self.method == "spectrum-plan" else 1

    def forecast(self) -> ForecastConfig:
        if self.method in ("taylorseer", "cg-taylor"):
            return dataclasses.replace(TAYLOR, order=self.order)
        return dataclasses.replace(SPECTRAL, order=max(1, self.order), degree=self.degree)

    def patch(self) -> DiTPatch:
        window = dict(start_percent=self.start_percent, end_percent=self.end_percent,
                      warmup_steps=self.warmup_steps, final_steps=self.forced_final_steps, memory_gib=self.memory_gib)
        if self.method == "cg-taylor" and self.granularity == "model":
            return ConfidenceGatedForecastPatch(OutputForecastConfig(
                self.forecast(), interval=self.interval, gate="confidence", threshold=self.threshold, **window),
                label=self.method)
        if self.method == "cg-taylor":  # CG-Taylor's own target: the stack's residual after the first block
            return BlockCachePatch(BlockCacheConfig(gate="cg", granularity="stack", threshold=self.threshold,
                                                    max_consecutive=max(0, self.interval - 1),
                                                    forecast=self.forecast(), forecast_time="step",
                                                    min_steps=FORECAST_MIN_STEPS, **window),
                                   name="forecast")
        if self.granularity != "model":
            return BlockCachePatch(BlockCacheConfig(gate="static", interval=self.interval,
                                                    granularity=self.granularity, max_consecutive=self.interval,
                                                    forecast=self.forecast(), forecast_time="step",
                                                    min_steps=FORECAST_MIN_STEPS, **window),
                                   name="forecast")
        gate = "planned" if self.method == "spectrum-plan" else "interval"
        return OutputForecastPatch(OutputForecastConfig(self.forecast(), interval=self.interval, gate=gate, **window),
                                   label=self.method)
