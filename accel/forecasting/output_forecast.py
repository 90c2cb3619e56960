"""Forecasting the whole model's output: skipped steps run no embedder, no block and no head.

The cheapest granularity: one tensor per stream (the model's prediction, as wide as the latent, far smaller than the
hidden states), and a skipped step costs nothing. On the reference model a first-order Taylor forecast of the output
on the scheduler's step axis is also the most accurate (32.3 dB at 4x, against 30.5 dB forecasting the block stack's
residual and 25.5 dB reusing it).

Decisions are per model call (every stream of a call computes, or none), on a fixed budget (`schedule.py`) or under
the agreement gate (`gates.py` here): compute when the Taylor and spectral forecasts of the output disagree.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..caching.gates import ScheduleWindow, planned_computes, relative_change, to_host
from ..context import StepContext
from ..patch import DiTPatch, ModelCall, RunModel
from ..state import RunState, StreamState
from .predictors import ForecastConfig, Predictor, predictor_nbytes

GATES = ("interval", "agreement")


@dataclass(frozen=True)
class OutputForecastConfig:
    """interval: at most this many steps between computes (1 computes every step: the unpatched model).
    gate: "interval" (a fixed, evenly spread budget) or "agreement" (compute once the Taylor and spectral forecasts
    of the output disagree by more than `threshold`, accumulated since the last compute; `interval` stays the
    longest stretch forecast)."""

    forecast: ForecastConfig = ForecastConfig("taylor", order=1)
    interval: int = 5
    gate: str = "interval"
    threshold: float = 0.05
    start_percent: float = 0.0
    end_percent: float = 1.0
    warmup_steps: int = 1
    final_steps: int = 1
    min_steps: int = 10   # shorter schedules (few-step distilled models) are not forecast: too few steps to fit

    def __post_init__(self):
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}")
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1 (1 computes every step), got {self.interval}")
        if self.threshold < 0:
            raise ValueError(f"threshold must be >= 0 (0 computes every step), got {self.threshold}")
        if not 0.0 <= self.start_percent <= self.end_percent <= 1.0:
            raise ValueError(f"need 0 <= start_percent <= end_percent <= 1, got start {self.start_percent}, "
                             f"end {self.end_percent}: set start_percent below end_percent")
        if self.warmup_steps < 0 or self.final_steps < 0:
            raise ValueError("warmup_steps and final_steps must be >= 0")

    @property
    def window(self) -> ScheduleWindow:
        return ScheduleWindow(self.start_percent, self.end_percent, self.warmup_steps, self.final_steps)

    @property
    def off(self) -> bool:
        return self.interval == 1 or (self.gate == "agreement" and self.threshold == 0)


@dataclass
class OutputStream(StreamState):
    predictor: Predictor | None = None
    check: Predictor | None = None           # agreement gate: the second forecaster
    disagreement: float = 0.0                # accumulated since the last compute
    since_compute: int = 0

    def reset(self) -> None:
        self.__init__()


@dataclass
class OutputForecastRun:
    calls: int = 0
    computed: int = 0
    total_steps: int = 0
    decisions: dict = field(default_factory=dict)  # step -> compute?, so separate cond/uncond calls agree


def schedule_time(ctx: StepContext) -> float:
    """The scheduler's own time, 1 -> 0 like sigma: forecasts are smoothest on it (see module docstring)."""
    return 1.0 - ctx.percent if ctx.total_steps > 0 else ctx.sigma


class OutputForecastPatch(DiTPatch):
    name = "forecast"
    exclusive = "skipping"

    def __init__(self, config: OutputForecastConfig = OutputForecastConfig(), label: str = "forecast"):
        self.config = config
        self.label = label  # the method's name in the log line (taylorseer, spectrum, ...)

    def _stats(self, run: RunState) -> OutputForecastRun:
        return run.data(self.name, OutputForecastRun)

    def _states(self, run: RunState, ctx: StepContext, x: torch.Tensor):
        return [(s, run.stream_state(self.name, s.key, x[s.rows], OutputStream)) for s in ctx.streams]

    def around_model(self, run: RunState, ctx: StepContext, call: ModelCall, run_model: RunModel) -> torch.Tensor:
        cfg = self.config
        stats = self._stats(run)
        stats.calls += 1
        stats.total_steps = max(stats.total_steps, ctx.total_steps)
        states = self._states(run, ctx, call.x)
        time = schedule_time(ctx)
        if not self._compute(run, ctx, states, time):
            parts = [state.predictor.predict(time) for _, state in states]
            for _, state in states:
                state.since_compute += 1
            return torch.cat(parts) if len(parts) > 1 else parts[0]
        out = run_model()
        stats.computed += 1
        computed_rows = None
        for s, state in states:
            value = out[s.rows]
            if computed_rows is None or computed_rows.shape[0] != value.shape[0]:
                computed_rows = torch.ones(value.shape[0], dtype=torch.bool, device=value.device)
            if state.predictor is None:
                state.predictor = cfg.forecast.build()
                if cfg.gate == "agreement":
                    state.check = _agreement_partner(cfg.forecast).build()
            # The forecasters keep what the model returned: their memory lives on its device, in its dtype.
            state.predictor.update(computed_rows, value, time)
            if state.check is not None:
                state.check.update(computed_rows, value, time)
            state.disagreement, state.since_compute = 0.0, 0
        return out

    def _compute(self, run, ctx: StepContext, states, time: float) -> bool:
        cfg = self.config
        if cfg.off or ctx.total_steps < max(1, cfg.min_steps) or any(st.predictor is None or st.predictor.empty for _, st in states):
            return True
        decisions = self._stats(run).decisions
        if ctx.step in decisions:  # a later call of the same step (cond and uncond run apart): same decision
            return decisions[ctx.step]
        if cfg.gate == "interval":
            compute = ctx.step in planned_computes(ctx.total_steps, cfg.interval, cfg.window)
        else:
            compute = not cfg.window.allows_reuse(ctx) or \
                any(st.since_compute + 1 >= cfg.interval for _, st in states)
            if not compute:
                # The one host sync of the step: how far the two forecasts of each stream drifted apart.
                change = torch.stack([relative_change(st.predictor.predict(time), st.check.predict(time)).max()
                                      for _, st in states])
                for (_, st), c in zip(states, to_host(change * ctx.step_weight)):
                    st.disagreement += c
                compute = any(st.disagreement > cfg.threshold for _, st in states)
        decisions[ctx.step] = compute
        return compute

    def forecast_bytes(self, run: RunState) -> int:
        return sum(predictor_nbytes(p) for state in run.states_of(self.name)
                   for p in (state.predictor, state.check) if p is not None)

    def on_run_end(self, run: RunState) -> str | None:
        stats = self._stats(run)
        cfg = self.config
        if stats.calls == 0:
            return None
        held = self.forecast_bytes(run)
        speedup = stats.calls / max(1, stats.computed)
        rule = f"at most {cfg.interval} steps apart" if cfg.gate == "interval" else \
            f"agreement threshold {cfg.threshold:g}, at most {cfg.interval} steps apart"
        line = (f"{self.label} ({cfg.forecast.describe()} of the model output, computes {rule}): ran "
                f"{stats.computed}/{stats.calls} model calls, {speedup:.2f}x compute speedup; forecaster held "
                f"{held / 2**20:.2f} MiB ({held} bytes) on the model's device")
        run.metrics["forecast_bytes"] = float(held)
        if cfg.off:
            line += ". Forecasting is off at this setting: outputs equal the unpatched model."
        elif stats.computed == stats.calls and stats.total_steps:
            reusable = cfg.window.reusable_steps(stats.total_steps)
            if reusable < 2 or stats.total_steps < cfg.min_steps:
                line += (f". The {stats.total_steps}-step schedule is too short to forecast: nothing was skipped. "
                         "Few-step (distilled) models gain from sparse attention or quantized weights instead.")
            else:
                line += ". Nothing was skipped: raise the interval or widen start/end percent."
        return line


def _agreement_partner(forecast: ForecastConfig) -> ForecastConfig:
    """The second opinion the agreement gate compares with: Taylor for a spectral fit, and the reverse."""
    if forecast.method == "taylor":
        return ForecastConfig("spectral", degree=forecast.degree, ridge=forecast.ridge, window=forecast.window)
    return ForecastConfig("taylor", order=max(1, forecast.order))
