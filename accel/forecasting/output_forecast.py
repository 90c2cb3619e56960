"""Forecasting the whole model's output: skipped steps run no embedder, no block and no head.

The cheapest granularity: one tensor per stream (the model's prediction, as wide as the latent, far smaller than the
hidden states), and a skipped step costs nothing. On the reference model a first-order Taylor forecast of the output
on the scheduler's step axis is also the most accurate (32.3 dB at 4x, against 30.5 dB forecasting the block stack's
residual and 25.5 dB reusing it).

Decisions are per model call (every stream of a call computes, or none), on a fixed budget: spread evenly
("interval", as TaylorSeer and Spectrum do) or placed by the forecast-error model of `plan.py` ("planned", ours).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..caching.predictors import ForecastConfig, Predictor
from ..caching.schedule import (ScheduleWindow, compute_budget, error_weighted_plan, planned_computes, schedule_time,
                               too_short_note)
from ..context import StepContext
from ..memory import AUTO, StateShape, validate_memory_gib
from ..patch import DiTPatch, ModelCall, RunModel
from ..state import RunState, StreamState
from .output_layout import OutputLayout

FORECAST_MIN_STEPS = 10  # a forecast needs enough computed steps to fit; shorter schedules are not forecast


class OutputGate:
    """When the output forecaster runs the model: a small strategy registered by name in `GATES`. The default spreads
    the computes evenly, at most `interval` steps apart (TaylorSeer, Spectrum)."""

    needs_first_block = False  # the gate probes the first block (its patch must hook `around_block`)

    def off(self, cfg) -> bool:
        """Whether `cfg` never forecasts (its outputs equal the unpatched model)."""
        return cfg.interval == 1

    def plan(self, cfg, ctx: StepContext) -> frozenset[int]:
        """The steps that run the model."""
        return planned_computes(ctx.total_steps, cfg.interval, cfg.window)

    def rule(self, cfg) -> str:
        """When the model runs, in words, for the log line."""
        return f"at most {cfg.interval} steps apart"


class PlannedGate(OutputGate):
    """As many computes as the even schedule, placed by the forecast-error model of `schedule.error_weighted_plan`
    over the sampler's own sigmas (ours). Without those sigmas (a custom sampler) it spreads them evenly."""

    def plan(self, cfg, ctx: StepContext) -> frozenset[int]:
        if len(ctx.schedule) != ctx.total_steps + 1:
            return super().plan(cfg, ctx)
        forced = frozenset(cfg.window.forced_computes(ctx.total_steps))
        budget = compute_budget(ctx.total_steps, cfg.interval)
        if budget > cfg.free_final_budget:
            # With a few computes, skipping the final step buys a better-placed one elsewhere (20 steps, 5 computes:
            # +2 dB); with more, the final step's uncorrected error costs more (30 steps, 6 computes: +0.7 dB; 50
            # steps, 8 / 11 computes: +2.7 / +3.2 dB when forced; reference model, 2 seeds).
            forced |= {ctx.total_steps - 1}
        return error_weighted_plan(ctx.schedule, budget, forced, weight_power=cfg.weight_power)

    def rule(self, cfg) -> str:
        return f"planned by forecast error, as many as every {cfg.interval} steps"


class ConfidenceGate(OutputGate):
    """CG-Taylor's confidence gate: the first block runs every step and its own forecast error, under `threshold`,
    lets the rest be forecast (`confidence_gate.py`)."""

    needs_first_block = True

    def off(self, cfg) -> bool:
        return super().off(cfg) or cfg.threshold == 0

    def rule(self, cfg) -> str:
        return (f"the first block's forecast error under {cfg.threshold:g} lets the rest be forecast, "
                f"at most {cfg.interval} steps apart")


GATES: dict[str, OutputGate] = {"interval": OutputGate(), "planned": PlannedGate(), "confidence": ConfidenceGate()}


@dataclass(frozen=True)
class OutputForecastConfig:
    """interval: at most this many steps between computes (1 computes every step: the unpatched model).
    gate: "interval" (computes spread evenly, no gap above `interval`), "planned" (as many computes as the even
    schedule with the final step, placed where the forecast error model of `plan.py` says they matter most;
    `weight_power` is that model's knob) or "confidence" (CG-Taylor: the first block runs every step and its own
    forecast error, under `threshold`, lets the rest be forecast; `confidence_gate.py`)."""

    forecast: ForecastConfig = ForecastConfig("taylor", order=1)
    interval: int = 5
    gate: str = "interval"
    weight_power: float = 0.5
    threshold: float = 0.1      # confidence gate: relative first-block error under which the forecast is trusted
    free_final_budget: int = 5  # planned gate: the final step is left to the plan only with this few computes
    start_percent: float = 0.0
    end_percent: float = 1.0
    warmup_steps: int = 1
    final_steps: int = 1
    min_steps: int = FORECAST_MIN_STEPS  # shorter schedules (few-step distilled models) run unpatched
    # State budget in GiB: -1 auto, 0 no limit (exactly this setting), else a size (accel/memory.py); over it the
    # history degrades in the order of `budget.output_ladder` before anything is allocated.
    memory_gib: float = AUTO

    def __post_init__(self):
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}")
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1 (1 computes every step), got {self.interval}")
        if self.threshold < 0:
            raise ValueError(f"threshold must be >= 0 (0 always computes), got {self.threshold}")
        if self.free_final_budget < 0:
            raise ValueError(f"free_final_budget must be >= 0, got {self.free_final_budget}")
        if self.weight_power < 0:
            raise ValueError(f"weight_power must be >= 0 (0 ignores the sigma drops), got {self.weight_power}")
        self.window  # validates the schedule window
        validate_memory_gib(self.memory_gib)

    @property
    def window(self) -> ScheduleWindow:
        return ScheduleWindow.of(self)

    @property
    def gate_type(self) -> OutputGate:
        """The gate strategy this setting names (`GATES`)."""
        return GATES[self.gate]

    @property
    def off(self) -> bool:
        return self.gate_type.off(self)


@dataclass
class OutputStream(StreamState):
    predictor: Predictor | None = None

    def reset(self) -> None:
        self.__init__()


@dataclass
class OutputForecastRun:
    total_steps: int = 0
    decisions: dict = field(default_factory=dict)  # step -> compute?, so separate cond/uncond calls agree
    config: OutputForecastConfig | None = None     # this run's setting, planned against the memory budget
    budget_note: str = ""
    layout: OutputLayout = OutputLayout()           # the model output's form (a tensor; LTX-2: [video, audio])


class OutputForecastPatch(DiTPatch):
    name = "forecast"
    exclusive = "skipping"
    keeps_ledger = True  # the host counts the model calls it sees and lets run: its log line's speedup

    def __init__(self, config: OutputForecastConfig = OutputForecastConfig(), label: str = "forecast"):
        if config.gate_type.needs_first_block and not self.uses("around_block"):
            raise ValueError("the confidence gate needs the first block: use ConfidenceGatedForecastPatch")
        self.config = config
        self.label = label  # the method's name in the log line (taylorseer, spectrum, ...)

    # The per-run and per-stream state classes: a gate that keeps more (the confidence gate) subclasses them.
    run_type: type = OutputForecastRun
    stream_type: type = OutputStream

    def _config(self, run: RunState) -> OutputForecastConfig:
        return self.run_data(run).config or self.config

    def memory_fit(self, shape: StateShape, free_memory: int | None, total_steps: int, device: torch.device):
        """The setting a run at `shape` would use within the memory budget, and its planned bytes (`memory.Fit`)."""
        from .budget import plan_output_forecast
        return plan_output_forecast(self, shape, free_memory, total_steps, device)

    def _plan(self, run: RunState, ctx: StepContext, call, x: torch.Tensor) -> None:
        """Fit this run's history to its memory budget at its first call, before anything is allocated (`call`: the
        first block's, for a gate whose state is shaped like the blocks' streams)."""
        device = call.hidden.device if call is not None else x.device
        result = self.memory_fit(StateShape.of(call, x, ctx), run.free_memory, ctx.total_steps, device)
        stats = self.run_data(run)
        stats.config, stats.budget_note = result.config, result.describe()

    def _states(self, run: RunState, ctx: StepContext, x: torch.Tensor):
        return [(s, run.stream_state(self.name, s.key, x[s.rows], self.stream_type)) for s in ctx.streams]

    def _predict(self, run: RunState, states, time: float):
        """The forecast output of every stream of the call, in the call's row order and the model's output form."""
        parts = [state.predictor.predict(time) for _, state in states]
        return self.run_data(run).layout.unpack(torch.cat(parts) if len(parts) > 1 else parts[0])

    def _packed(self, run: RunState, out) -> torch.Tensor:
        """The computed output as one batch-first tensor; remembers its form for the forecasts."""
        stats = self.run_data(run)
        stats.layout = OutputLayout.of(out)
        return stats.layout.pack(out)

    def around_model(self, run: RunState, ctx: StepContext, call: ModelCall, run_model: RunModel) -> torch.Tensor:
        stats = self.run_data(run)
        if stats.config is None:
            self._plan(run, ctx, None, call.x)
        stats.total_steps = max(stats.total_steps, ctx.total_steps)
        if self._config(run).off:  # nothing is ever forecast: keep nothing (the memory budget's last rung relies on it)
            return run_model()
        states = self._states(run, ctx, call.x)
        time = schedule_time(ctx)
        if not self._compute(run, ctx, states):
            return self._predict(run, states, time)
        out = run_model()
        packed = self._packed(run, out)
        for s, state in states:
            self._record(run, state, packed[s.rows], time)
        return out

    def _record(self, run: RunState, state, value: torch.Tensor, time: float) -> None:
        """Feed one stream's computed output to its forecaster (made on first use). The forecaster keeps what the
        model returned: its memory lives on the model's device, in its dtype."""
        if state.predictor is None:
            state.predictor = self._config(run).forecast.build()
        state.predictor.update(torch.ones(value.shape[0], dtype=torch.bool, device=value.device), value, time)

    def _compute(self, run, ctx: StepContext, states) -> bool:
        cfg = self._config(run)
        if cfg.off or ctx.total_steps < max(1, cfg.min_steps) or \
                any(st.predictor is None or st.predictor.empty for _, st in states):
            return True
        decisions = self.run_data(run).decisions
        if ctx.step in decisions:  # a later call of the same step (cond and uncond run apart): same decision
            return decisions[ctx.step]
        decisions[ctx.step] = compute = ctx.step in self.plan(ctx)
        return compute

    def plan(self, ctx: StepContext) -> frozenset[int]:
        """The steps that run the model, by the gate."""
        return self.config.gate_type.plan(self.config, ctx)

    def rule(self) -> str:
        """When the model runs, in words, for the log line."""
        return self.config.gate_type.rule(self.config)

    def on_run_end(self, run: RunState) -> str | None:
        ledger = run.ledger_of(self.name)
        if ledger.model_calls == 0:
            return None
        stats, cfg, held = self.run_data(run), self._config(run), self.state_held(run)
        line = (f"{self.label} ({cfg.forecast.describe()} of the model output, computes {self.rule()}): ran "
                f"{ledger.model_calls_run}/{ledger.model_calls} model calls, {ledger.model_call_speedup:.2f}x "
                f"compute speedup; forecaster held "
                f"{held / 2**20:.2f} MiB ({held} bytes) on the model's device; {stats.budget_note}")
        run.metrics["forecast_bytes"] = float(held)
        if cfg.off:
            line += ". Forecasting is off at this setting: outputs equal the unpatched model."
        elif ledger.model_calls_skipped == 0 and stats.total_steps:
            if cfg.window.too_short(stats.total_steps):
                line += too_short_note(cfg.window, stats.total_steps, "forecast")
            else:
                line += ". Nothing was skipped: raise the interval or widen start/end percent."
        return line

