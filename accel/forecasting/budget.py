"""The cheaper rungs every forecaster's history offers a memory budget (`accel/memory.py`), in the order applied.

  1. history in bfloat16 (when the model computes in a wider dtype): costs nothing measurable on the reference
     model, halves fp32 history;
  2. history offloaded to CPU memory (not for a model that already runs on the CPU): the forecast is exact, each
     computed value goes to the host once and each forecast back once;
  3. Taylor order lowered to 1, then 0 (reuse of the last value): fewer stored terms, a worse forecast.

The rungs themselves live with the predictors' engine (`accel/caching/budget.py`), which puts its own rung (a static
schedule on the block stack's residual instead of each block's) between 1 and 2.
"""
from __future__ import annotations

import dataclasses

import torch

from ..caching.budget import Rung, offload_rung, order_rungs, precision_rung
from ..memory import UNLIMITED, Fit, MemoryBudget, StateShape, fit, planned_state


def _on_forecast(rung: Rung):
    what, cheaper = rung

    def apply(config):
        forecast = cheaper(config.forecast)
        return None if forecast is None else dataclasses.replace(config, forecast=forecast)
    return what, apply


def output_ladder(dtype: torch.dtype, device: torch.device) -> list:
    """The output forecaster's order: precision, offload, lower order, then forecasting off."""
    return [_on_forecast(precision_rung(dtype)), _on_forecast(offload_rung(device)),
            *(_on_forecast(r) for r in order_rungs()),
            ("forecasting off", lambda c: dataclasses.replace(c, interval=1))]


@torch.compiler.disable
def plan_output_forecast(patch, shape: StateShape, free_memory: int | None, total_steps: int,
                         device: torch.device) -> Fit:
    """This run's output-forecast setting within its memory budget (once per run, before anything is allocated)."""
    config = patch.config
    budget = MemoryBudget.resolve(config.memory_gib, free_memory)
    steps = total_steps or 20

    def planned(c) -> tuple[int, int]:
        return planned_state(type(patch), dataclasses.replace(c, memory_gib=UNLIMITED), shape, steps, steps)
    return fit(config, output_ladder(shape.dtype, device), planned, budget)
