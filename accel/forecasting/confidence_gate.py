"""CG-Taylor's confidence gate in front of the model-output forecast.

"Forecasting When to Forecast" (CG-Taylor) runs the first block on every step and compares its output with the
first block's own Taylor forecast: a small error means the trajectory is as smooth as the forecast assumes, so the
forecast of the last block is trusted; a large one falls back to full computation. The test itself is
`caching.gates.ConfidenceProbe`, shared with the block cache's "cg" gate; this file runs it per model call.

Here the forecast is of the model output (the last block after the head, a fixed map), which on the reference model
is the most accurate target (the block stack's residual, CG-Taylor's own target, is kept as granularity "stack" in
the block cache). The probe is the first block of the model's ordinary forward: when the gate trusts the forecast,
the first block's hook ends the forward early (`_ForecastTrusted`, caught in `around_model`); when it does not, the
forward simply goes on, so a computed step costs no more than the unpatched model.

With several streams in a call (CFG's cond and uncond) the probe runs the first block on the cond stream only and
the decision holds for all streams (it must: CFG multiplies any cond/uncond mismatch by the guidance scale). That
halves the probe's cost under CFG; when the forecast is not trusted the other streams' first block runs next.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..caching.block_cache import run_rows
from ..caching.gates import ConfidenceProbe
from ..caching.schedule import schedule_time
from ..context import StepContext, Stream
from ..parallel.comm import agree_verdict
from ..patch import BlockCall, ModelCall, RunBlock, RunModel
from ..state import RunState
from .output_forecast import OutputForecastPatch, OutputForecastRun, OutputStream


class _ForecastTrusted(Exception):
    """Raised by the first block's hook when the gate trusts the forecast: the rest of the forward is not needed."""


@dataclass
class GatedStream(OutputStream):
    probe: ConfidenceProbe = field(default_factory=ConfidenceProbe)  # the first block's residual and its forecast


@dataclass
class GatedRun(OutputForecastRun):
    probing: bool = False               # this call lets the first block decide
    probe_residual: torch.Tensor | None = None  # this call's first-block residual (all rows)
    call_states: list = field(default_factory=list)  # this call's (stream, state) pairs, keyed by the model input
    last_compute: int = -1              # the last step the model ran
    trusted: int = 0                    # calls the probe ended early
    errors: list = field(default_factory=list)  # the gate's signal on each probed step (for the log line)
    input_like: torch.Tensor | None = None       # the model input's shape, on the meta device (for the plan)


class ConfidenceGatedForecastPatch(OutputForecastPatch):
    """`OutputForecastPatch` with gate "confidence": the first block decides, per step, forecast or compute."""

    run_type = GatedRun
    stream_type = GatedStream

    def around_model(self, run: RunState, ctx: StepContext, call: ModelCall, run_model: RunModel) -> torch.Tensor:
        stats = self.run_data(run)
        stats.input_like = torch.empty(call.x.shape, dtype=call.x.dtype, device="meta")  # the plan's input shape
        stats.total_steps = max(stats.total_steps, ctx.total_steps)
        states = self._states(run, ctx, call.x)
        time = schedule_time(ctx)
        decided = stats.decisions.get(ctx.step)
        if decided is False:  # a later call of a step whose probe trusted the forecast (cond and uncond apart)
            return self._predict(run, states, time)
        stats.probing = decided is None and self._may_forecast(stats, ctx, states)
        stats.probe_residual, stats.call_states = None, states
        try:
            out = run_model()
        except _ForecastTrusted:
            # Only the first block ran (on the probed rows); the host's ledgers count the others as skipped.
            stats.decisions[ctx.step] = False
            stats.trusted += 1
            return self._predict(run, states, time)
        finally:
            stats.probing = False
            stats.call_states = []
        stats.decisions[ctx.step] = True
        stats.last_compute = max(stats.last_compute, ctx.step)
        if self._config(run).off:  # planned off at the first block: keep nothing (the budget's last rung)
            stats.probe_residual = None
            return out
        residual = stats.probe_residual
        packed = self._packed(run, out)
        for s, state in states:
            value = packed[s.rows]
            self._record(run, state, value, time)
            if residual is not None and residual.shape[0] == packed.shape[0]:
                computed = torch.ones(value.shape[0], dtype=torch.bool, device=value.device)
                state.probe.record(computed, residual[s.rows], time, self._config(run).forecast)
        stats.probe_residual = None
        return out

    def around_block(self, run: RunState, ctx: StepContext, call: BlockCall, run_block: RunBlock) -> dict:
        if call.position != 0:
            return run_block(call.args)
        stats = self.run_data(run)
        if stats.config is None:  # the run's first call: the probe's history is shaped like the first block's
            self._plan(run, ctx, call, stats.input_like)
        if self._config(run).off:
            return run_block(call.args)
        # Blocks may update their input in place (Flux's addcmul_): keep the input to measure the residual.
        before = call.hidden.clone()
        key = call.stream_keys[0]
        probe = self._probe_stream(ctx, call) if stats.probing else None
        if probe is None:
            out = run_block(call.args)
            stats.probe_residual = out[key] - before
            if stats.probing and self._trust(run, ctx, stats.probe_residual, ctx.streams):
                raise _ForecastTrusted
            return out
        probe_rows = list(range(probe.rows.start, probe.rows.stop))
        first = run_rows(run_block, call, probe_rows)
        if self._trust(run, ctx, first[key] - before, (probe,)):
            raise _ForecastTrusted
        # Not trusted: the first block runs on the other rows too, and the forward goes on as usual.
        out = run_rows(run_block, call, [i for i in range(before.shape[0]) if i not in probe_rows])
        index = torch.tensor(probe_rows, device=before.device)
        out = {k: (v.index_copy(0, index, first[k].index_select(0, index)) if k in call.stream_keys and v is not None
                   else v) for k, v in out.items()}
        stats.probe_residual = out[key] - before
        return out

    @staticmethod
    def _probe_stream(ctx: StepContext, call: BlockCall) -> Stream | None:
        """The stream the probe runs on alone: the cond stream of a call with several (None: probe all rows)."""
        if len(ctx.streams) < 2 or call.hidden.shape[0] != ctx.batch_size:
            return None
        return next((s for s in ctx.streams if s.kind == "cond"), ctx.streams[0])

    def _may_forecast(self, stats: GatedRun, ctx: StepContext, states) -> bool:
        """Whether this step may forecast at all; the probe then decides whether it does."""
        cfg = stats.config or self.config
        if cfg.off or ctx.total_steps < max(1, cfg.min_steps) or not cfg.window.allows_reuse(ctx):
            return False
        if stats.last_compute < 0 or ctx.step - stats.last_compute >= cfg.interval:
            return False  # `interval`: the longest stretch between computes, as for the other gates
        return all(st.predictor is not None and not st.predictor.empty and st.probe.ready for _, st in states)

    def _trust(self, run: RunState, ctx: StepContext, residual: torch.Tensor, probed: tuple[Stream, ...]) -> bool:
        """CG-Taylor's test (`ConfidenceProbe`) on every probed row: the worst error under `threshold` trusts the
        forecast. The decision holds for every stream of the step."""
        time = schedule_time(ctx)
        worst = 0.0
        keys = {s.key for s in probed}
        for s, state in self.run_data(run).call_states:
            if s.key not in keys:
                continue
            if residual.shape[0] != ctx.batch_size or not state.probe.ready:
                worst = math.inf
                break
            error = state.probe.error(residual[s.rows], time)
            worst = max(worst, float(error.max()))  # the one host sync of a probed step
        # Under CFG parallelism the cond stream's group measured what one process would: every group takes its word.
        worst = agree_verdict(worst, authoritative=any(s.kind == "cond" for s in probed))
        if worst == math.inf:
            return False
        self.run_data(run).errors.append(worst)
        return worst < self.config.threshold

    def on_run_end(self, run: RunState) -> str | None:
        line = super().on_run_end(run)
        stats = self.run_data(run)
        if line is None or not stats.errors:
            return line
        errors = sorted(stats.errors)
        speedup = run.ledger_of(self.name).row_block_speedup  # the probes' rows count: the host counted them
        return (f"{line}; the probe trusted the forecast on {stats.trusted} of {len(errors)} probed calls "
                f"(median first-block error {errors[len(errors) // 2]:.3g}); with the probes, "
                f"{speedup:.2f}x block compute speedup")
