"""The block cache's memory budget: the state a setting would hold, planned before the run allocates, and the order
in which a setting that does not fit is made cheaper (before anything is allocated; the log line says what was done).

  1. history in bfloat16 (only when the model computes in fp32);
  2. a static schedule on the block stack's residual instead of each block's (the same longest stretch between
     computes): one residual instead of one per block, and the block gate's kept inputs go. On models with several
     block kinds (Flux, HunyuanVideo: a joint sequence in the single blocks) the residuals stay per block, only the
     gate's inputs go;
  3. history offloaded to CPU memory (GPU models only; at most a quarter of the system's available memory);
  3b. on models with several block kinds: one residual over the last kind's blocks (granularity "span": the single
     blocks skipped as one span, the double blocks always run), one hidden state instead of a residual per block;
  4. Taylor order 1, then plain reuse;
  5. caching off, said in the log line, rather than running out of memory mid-run.

Why this order (not yet measured rung by rung on the bench): 1 and 3 leave the forecast itself as it was (rounding,
host traffic); 2 keeps the preset's schedule and forecast order on one residual; 4 weakens the forecast itself. The
bench names `blockcache-<level>-stack` run the presets as rung 2 leaves them.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from ..memory import UNLIMITED, Fit, MemoryBudget, StateShape, fit, planned_state
from ..state import RunState
from .predictors import ForecastConfig

SIMULATED_STEPS = 20  # enough for every predictor's history to fill (Spectrum's window is 6 computes)

# The cheaper settings of any predictor's history, shared with the output forecaster (`accel/forecasting/budget.py`).
Rung = tuple[str, Callable[[ForecastConfig], ForecastConfig | None]]


def precision_rung(dtype: torch.dtype) -> Rung:
    wide = dtype.is_floating_point and torch.finfo(dtype).bits > 16

    def cheaper(f: ForecastConfig) -> ForecastConfig | None:
        return dataclasses.replace(f, history_dtype=torch.bfloat16) if wide and f.history_dtype is None else None
    return "history stored in bfloat16", cheaper


def offload_rung(device: torch.device) -> Rung:
    def cheaper(f: ForecastConfig) -> ForecastConfig | None:
        return dataclasses.replace(f, offload=True) if device.type not in ("cpu", "meta") and not f.offload else None
    return "history offloaded to CPU memory", cheaper


def order_rungs() -> list[Rung]:
    def lower_to(order: int):
        def cheaper(f: ForecastConfig) -> ForecastConfig | None:
            if f.order <= order:
                return None
            return dataclasses.replace(f, order=order, method="taylor" if order == 0 else f.method)
        return cheaper
    return [("Taylor order lowered to 1", lower_to(1)), ("forecast replaced by reuse (order 0)", lower_to(0))]


def _on_history(rung):
    """A predictor rung applied to a block-cache setting's forecaster."""
    what, cheaper = rung

    def apply(config):
        forecast = cheaper(config.predictor)
        return None if forecast is None else dataclasses.replace(config, forecast=forecast,
                                                                 forecast_order=forecast.order)
    return what, apply


def _stack_schedule(config):
    return config.gate_type.stack_setting(config) if config.per_block else None


def _last_kind_span(config):
    # After the stack rung a model with several block kinds still keeps per-block residuals; one residual over its
    # last kind (the single blocks) keeps one hidden state instead.
    return dataclasses.replace(config, granularity="span") \
        if config.granularity == "stack" and not config.probes_first_blocks and not config.per_block else None


def ladder(dtype: torch.dtype, device: torch.device, several_kinds: bool = False) -> list:
    span = [("one residual over the last block kind's span (the single blocks) instead of each block's",
             _last_kind_span)] if several_kinds else []
    return [_on_history(precision_rung(dtype)),
            ("static schedule on the block stack's residual instead of each block's", _stack_schedule),
            _on_history(offload_rung(device)),
            *span,
            *(_on_history(r) for r in order_rungs()),
            ("caching off", lambda c: dataclasses.replace(c, gate="static", interval=1))]


def planned_bytes(config, shape: StateShape, total_steps: int) -> tuple[int, int]:
    """(device, host) bytes `config` would hold at `shape`, from the block cache's own hooks (`memory.simulate`)."""
    from .block_cache import BlockCachePatch
    return planned_state(BlockCachePatch, dataclasses.replace(config, memory_gib=UNLIMITED), shape,
                         total_steps or SIMULATED_STEPS, SIMULATED_STEPS)


def fit_block_cache(patch, shape: StateShape, free_memory: int | None, total_steps: int,
                    device: torch.device) -> Fit:
    config = patch.config
    budget = MemoryBudget.resolve(config.memory_gib, free_memory)
    several_kinds = len({kind for kind, _ in shape.layout}) > 1
    return fit(config, ladder(shape.dtype, device, several_kinds), lambda c: planned_bytes(c, shape, total_steps),
               budget)


@torch.compiler.disable
def plan_block_cache(patch, shape: StateShape, run: RunState, total_steps: int, device: torch.device):
    """This run's setting and the log clause saying what the budget did. Once per run, at its first call, and never
    inside a captured graph (a compiled forward calls it eagerly)."""
    result = fit_block_cache(patch, shape, run.free_memory, total_steps, device)
    return result.config, result.describe()
