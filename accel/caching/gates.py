"""When to compute: the gates of the block cache, a registry of small strategies (`GATES`) built on pure functions
of tensors.

Every decision is made per batch row (a sample of one conditioning stream), so a sample's image never depends on what
else shares its batch. Decisions stay on the device as boolean masks, except the block gate's, which reads its change
back at every block anyway and keeps its per-row counters on the host; `to_host` is the one place anything is read
back.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..context import StepContext
from ..parallel.comm import agree_row_means
from .schedule import ScheduleWindow, planned_computes


def relative_change(current: torch.Tensor, previous: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-row mean |current - previous| / mean |previous|: (B, ...) -> (B,) in float32.

    Summed over the trailing dims as the tensors lie (a model's token stream is often a transposed view, which
    `flatten` would copy whole), with the difference made absolute in place: the value only feeds a threshold."""
    dims = tuple(range(1, current.dim()))
    count = math.prod(current.shape[1:])
    diff = (current.float() - previous.float()).abs_().sum(dims) / count
    ref = previous.float().abs().sum(dims) / count
    # Under sequence parallelism each rank holds a shard of the tokens: every rank decides from the whole image.
    diff, ref = agree_row_means(diff, ref, count=count)
    return diff / ref.clamp_min(eps)


def forecast_error(current: torch.Tensor, forecaster, time: float) -> torch.Tensor:
    """CG-Taylor's confidence signal: per row, how far `current` is from its own forecast at `time` (relative; inf
    while the forecaster has nothing to forecast from)."""
    if forecaster is None or forecaster.empty:
        return torch.full((current.shape[0],), float("inf"), device=current.device)
    return relative_change(current, forecaster.predict(time))


def to_host(mask: torch.Tensor) -> list[bool]:
    """The host sync of a decision: one small device-to-host copy per decision point."""
    return mask.tolist()


def accumulated_change_gate(accumulated: torch.Tensor, change: torch.Tensor, threshold: float,
                            consecutive: torch.Tensor, max_consecutive: int,
                            have_cache: torch.Tensor | bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual-change gate (first-block gate and E-DiT-style block gate share it).

    Adds `change` to each row's running total; a row may reuse while that total stays under `threshold`, it has a
    cache, and it has not reused `max_consecutive` times in a row. Returns (reuse mask, new accumulated); rows that
    compute start accumulating afresh.
    """
    total = accumulated + change
    reuse = (total < threshold) & (consecutive < max_consecutive)
    if isinstance(have_cache, bool):
        reuse = reuse if have_cache else torch.zeros_like(reuse)
    else:
        reuse = reuse & have_cache
    return reuse, torch.where(reuse, total, 0.0)


def static_gate(ctx: StepContext, interval: int, window: ScheduleWindow, rows: int, device) -> torch.Tensor:
    """Reuse on every step the fixed-budget plan does not compute (see `planned_computes`); all rows alike."""
    reuse = ctx.total_steps > 0 and ctx.step not in planned_computes(ctx.total_steps, interval, window)
    return torch.full((rows,), reuse, dtype=torch.bool, device=device)


# ---- the gates: when the block cache computes, as small strategies registered by name ------------------------------
# The engine (`block_cache.py`) keeps the stream bookkeeping (consecutive reuses, which rows have a cache, residuals)
# and asks its gate at three points of a model call; each gate keeps its own per-stream state (`state_type`).

class Gate:
    """A block-cache gate. `probes_first_blocks`: it decides after the first `gate_blocks` blocks ran, from their
    residual; `per_block`: it decides anew at every block (its decision is read back once per block)."""

    probes_first_blocks = False
    per_block = False
    state_type: type | None = None

    def new_state(self, rows: int, device: torch.device):
        return self.state_type() if self.state_type is not None else None

    def off(self, cfg) -> bool:
        """Whether `cfg` never reuses (its outputs equal the unpatched model)."""
        return cfg.threshold == 0

    def setting(self, cfg) -> str:
        """The gate's knob, for the log line."""
        return f"threshold {cfg.threshold:g}"

    def stack_setting(self, cfg):
        """The budget rung's cheaper setting: the same skipping on the block stack's residual (`budget.py`)."""
        return dataclasses.replace(cfg, granularity="stack")

    def at_call_start(self, cache, run, ctx: StepContext, call, cfg) -> None:
        """Before the first block of a model call."""

    def after_gate_blocks(self, cache, run, ctx: StepContext, call, out: dict, cfg) -> None:
        """After the gate blocks ran (only for a gate that `probes_first_blocks`)."""

    def at_block(self, cache, run, ctx: StepContext, call, cfg) -> None:
        """Before a block that may be skipped."""

    def decision(self, stream) -> torch.Tensor | None:
        """The (rows,) reuse mask of the stream for the current block; None: compute."""
        return stream.reuse

    def decision_rows(self, stream) -> list[bool] | None:
        """The same decision where the gate made it on the host (no read-back needed); None: ask `decision`."""
        return None

    def end_call(self, own) -> None:
        """End of a model call, with the gate's own state of one stream."""


class _FirstBlocksGate(Gate):
    """Decides for the whole span after the gate blocks, from the gate blocks' residual (output - input), as in
    FBCache: the output itself is dominated by the block input, which hides how much the blocks' own contribution
    moved. Subclasses say how a stream's residual turns into a reuse proposal, and what they keep of it."""

    probes_first_blocks = True

    def after_gate_blocks(self, cache, run, ctx, call, out, cfg) -> None:
        gate_out = out[call.stream_keys[0]]
        gate_residual = gate_out - cache.run_data(run).stack_input
        proposals = []
        for s, state in cache.streams(run, ctx, gate_out):
            current = gate_residual[s.rows]
            reuse, total = self.propose(state, current, ctx, cfg, cache.time(ctx))
            proposals.append((state, reuse, total, current))
        joint = cache.decide_jointly(run, ctx, "span", [p[:3] for p in proposals])
        for state, _, total, current in proposals:
            state.reuse = joint
            self.commit(state, joint, total, current, cfg, cache.time(ctx))

    def propose(self, state, current, ctx, cfg, time) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def commit(self, state, joint, total, current, cfg, time) -> None:
        raise NotImplementedError


@dataclass
class FirstBlockState:
    accumulated: torch.Tensor | None = None   # (rows,) running change since the last compute
    reference: torch.Tensor | None = None     # gate-block residual at the previous call


class FirstBlockGate(_FirstBlocksGate):
    """FBCache's gate: reuse while the gate blocks' residual has changed little, accumulated since the last compute."""

    state_type = FirstBlockState

    def new_state(self, rows: int, device: torch.device) -> FirstBlockState:
        return FirstBlockState(accumulated=torch.zeros(rows, device=device))

    def propose(self, state, current, ctx, cfg, time):
        own = state.gate
        ref = own.reference
        change = relative_change(current, ref) * ctx.step_weight \
            if ref is not None and ref.shape == current.shape else torch.full_like(own.accumulated, float("inf"))
        reuse, total = accumulated_change_gate(own.accumulated, change, cfg.threshold, state.consecutive,
                                               cfg.max_consecutive, state.have_cache)
        own.reference = current  # step-to-step change is what accumulates
        return reuse, total

    def commit(self, state, joint, total, current, cfg, time) -> None:
        state.gate.accumulated = torch.where(joint, total, torch.zeros_like(total))


@dataclass
class ConfidenceProbe:
    """CG-Taylor's confidence test ("Forecasting When to Forecast"), defined once for both places it gates: the block
    cache's "cg" gate (`ConfidenceGate`, per row) and the model-output forecast (`forecasting/confidence_gate.py`, per
    call). The gate blocks' residual is forecast from the same computed steps as what is skipped; how far the
    residual lands from that forecast (`forecast_error`, relative) is the signal, and under the threshold the
    forecast of the rest is trusted. It is not accumulated: it already grows with the distance from the last
    compute."""

    forecast: object | None = None  # the gate blocks' residual, forecast like the rest (a `Predictor`)

    @property
    def ready(self) -> bool:
        """Whether it has computed steps to forecast from (before that nothing is trusted)."""
        return self.forecast is not None and not self.forecast.empty

    def error(self, residual: torch.Tensor, time: float) -> torch.Tensor:
        """(rows,) relative error of the forecast at `time` against the gate blocks' `residual` (inf until ready)."""
        return forecast_error(residual, self.forecast, time)

    def record(self, computed: torch.Tensor, residual: torch.Tensor, time: float, predictor) -> None:
        """Feed the `computed` rows' residual to the forecast (built from the `predictor` config on first use)."""
        if self.forecast is None:
            self.forecast = predictor.build()
        self.forecast.update(computed, residual, time)


class ConfidenceGate(_FirstBlocksGate):
    """CG-Taylor's confidence gate in the block cache: a row may reuse while its `ConfidenceProbe` error is under
    the threshold."""

    state_type = ConfidenceProbe

    def propose(self, state, current, ctx, cfg, time):
        change = state.gate.error(current, time)
        reuse = (change < cfg.threshold) & state.have_cache & (state.consecutive < cfg.max_consecutive)
        return reuse, None

    def commit(self, state, joint, total, current, cfg, time) -> None:
        state.gate.record(~joint, current, time, cfg.predictor)


@dataclass
class BlockInputState:
    # block -> (its batched input at the last call, this stream's rows in it)
    inputs: dict[int, tuple[torch.Tensor, slice]] = field(default_factory=dict)
    # The per-row counters live on the host: this gate reads its change back once per block anyway, and at a
    # block's scale a dozen tiny device ops per decision cost more than the arithmetic (issue 25's overhead).
    accumulated: dict[int, list] = field(default_factory=dict)   # block -> per row change since then (float32)
    consecutive: dict[int, list[int]] = field(default_factory=dict)  # block -> per row reuses in a row
    reuse_rows: list[bool] | None = None                           # the current block's decision, per row


class BlockInputGate(Gate):
    """Per block, in the spirit of E-DiT: reuse a block while its input moved little since it was last computed.

    The change is measured on the device and read back once per block (the one host sync of a decision); the
    accumulation, the threshold and the joint decision are then a few float32 scalars per row on the host, with
    the same float32 rounding as `accumulated_change_gate` on the device."""

    per_block = True
    state_type = BlockInputState

    def stack_setting(self, cfg):
        # At the presets' threshold this gate reuses until `max_consecutive`: the same stretch, on a schedule.
        return dataclasses.replace(cfg, gate="static", granularity="stack", interval=cfg.max_consecutive + 1)

    def at_block(self, cache, run, ctx, call, cfg) -> None:
        p = call.position
        streams = cache.streams(run, ctx, call.hidden)
        if self._may_reuse(streams, p, call, ctx, cfg):
            measured, where = self._measure(streams, p, call.hidden, ctx.step_weight)
        else:  # the decision is "compute" whatever the change: the same as an infinite one, without measuring it
            measured, where = [], [(None, s.rows) for s, _ in streams]
        self._decide(cache, run, ctx, call, cfg, streams, measured, where)
        # The block's input, kept unchanged for the next call's comparison: a copy where the block runs (it may
        # update its input in place), the input itself where every row reuses.
        runs = not all(r for _, state in streams for r in state.gate.reuse_rows)
        stable = cache.stable_input(run, call) if runs else call.hidden
        for s, state in streams:
            state.gate.inputs[p] = (stable, s.rows)

    @staticmethod
    def _may_reuse(streams, p: int, call, ctx, cfg) -> bool:
        """Whether any row could reuse at this block: outside the schedule window, or where no stream has a cache or
        every row has reused `max_consecutive` times, each row computes whatever its change (`_decide`)."""
        if cfg.off or not cfg.window.allows_reuse(ctx):
            return False
        for _, state in streams:
            if _has_history(state, p, call) and \
                    any(n < cfg.max_consecutive for n in state.gate.consecutive.get(p) or [0]):
                return True
        return False

    @staticmethod
    def _measure(streams, p: int, hidden: torch.Tensor, step_weight: float):
        """Each stream's relative input change at block `p` since its last call, on the device: the measured (rows,)
        tensors and, per stream, (index into them, its rows there), or (None, rows) where there is nothing to
        compare. Streams stored from one batched call are compared in one batched pass, the rest one by one."""
        stored = [state.gate.inputs.get(p) for _, state in streams]
        if all(entry is not None for entry in stored) and all(entry[0] is stored[0][0] for entry in stored) \
                and [entry[1] for entry in stored] == [s.rows for s, _ in streams] \
                and stored[0][0].shape == hidden.shape:
            measured, where = [relative_change(hidden, stored[0][0])], [(0, s.rows) for s, _ in streams]
        else:
            measured, where = [], []
            for (s, _), entry in zip(streams, stored):
                ref = entry[0][entry[1]] if entry is not None else None
                current = hidden[s.rows]
                if ref is not None and ref.shape == current.shape:
                    measured.append(relative_change(current, ref))
                    where.append((len(measured) - 1, slice(0, s.rows.stop - s.rows.start)))
                else:
                    where.append((None, s.rows))
        if step_weight != 1:  # on the device, as the change itself (float32 times the weight rounded to float32)
            measured = [m * step_weight for m in measured]
        return measured, where

    # Host bookkeeping (the read-back and per-row counters): kept out of a compiled graph, as `decide_jointly` is.
    @torch.compiler.disable
    def _decide(self, cache, run, ctx, call, cfg, streams, measured, where) -> None:
        p = call.position
        values = to_host(torch.cat(measured)) if len(measured) > 1 else to_host(measured[0]) if measured else []
        offsets = [0]
        for m in measured:
            offsets.append(offsets[-1] + m.shape[0])
        threshold = np.float32(cfg.threshold)
        proposals = []
        for (s, state), (index, rows) in zip(streams, where):
            own = state.gate
            n_rows = s.rows.stop - s.rows.start
            if index is None:
                change = [np.float32("inf")] * n_rows
            else:
                change = [np.float32(v) for v in values[offsets[index] + rows.start:offsets[index] + rows.stop]]
            have_cache = _has_history(state, p, call)
            consecutive = own.consecutive.get(p) or [0] * n_rows
            accumulated = own.accumulated.get(p) or [np.float32(0)] * n_rows
            totals = [a + c for a, c in zip(accumulated, change)]  # float32 + float32: the device's rounding
            reuse = [bool(t < threshold) and n < cfg.max_consecutive and have_cache
                     for t, n in zip(totals, consecutive)]
            proposals.append((state, reuse, totals, consecutive))
        joint = cache.decide_jointly(run, ctx, p, [(state, reuse, None) for state, reuse, _, _ in proposals])
        for state, reuse, totals, consecutive in proposals:
            own = state.gate
            own.accumulated[p] = [t if j and r else np.float32(0) for t, r, j in zip(totals, reuse, joint)]
            own.consecutive[p] = [n + 1 if j else 0 for n, j in zip(consecutive, joint)]
            own.reuse_rows = list(joint)

    def decision(self, stream) -> torch.Tensor | None:
        return None if stream.gate.reuse_rows is None else \
            torch.tensor(stream.gate.reuse_rows, dtype=torch.bool)

    def decision_rows(self, stream) -> list[bool] | None:
        return stream.gate.reuse_rows

    def end_call(self, own) -> None:
        own.reuse_rows = None


def _has_history(state, p: int, call) -> bool:
    """Whether the stream has a residual history for block `p` to reuse (what a skipped block emits from)."""
    cached = state.block_residual.get((p, call.stream_keys[0]))
    return cached is not None and not cached.empty


class StaticGate(Gate):
    """A fixed budget: compute at most `interval` steps apart, spread evenly (`schedule.planned_computes`)."""

    def off(self, cfg) -> bool:
        return cfg.interval == 1

    def setting(self, cfg) -> str:
        return f"computes at most {cfg.interval} steps apart"

    def at_call_start(self, cache, run, ctx, call, cfg) -> None:
        allowed = cfg.window.allows_reuse(ctx) and not cfg.off
        device = call.hidden.device
        for s, state in cache.streams(run, ctx, call.hidden):
            rows = s.rows.stop - s.rows.start
            gate = static_gate(ctx, cfg.interval, cfg.window, rows, device) if allowed else \
                torch.zeros(rows, dtype=torch.bool, device=device)
            state.reuse = gate & state.have_cache & (state.consecutive < cfg.max_consecutive)


GATES: dict[str, Gate] = {"first_block": FirstBlockGate(), "cg": ConfidenceGate(), "block": BlockInputGate(),
                          "static": StaticGate()}
