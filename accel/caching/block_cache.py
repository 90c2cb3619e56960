"""Block caching: skip transformer blocks whose output barely changes, and reuse their cached residual instead.

Two separate parts (so forecasting can replace the second without touching the first):
  * *when to compute* — a gate, a strategy looked up by name in `gates.GATES`: the first-block gate of FBCache,
    CG-Taylor's confidence gate ("Forecasting When to Forecast"), the per-block input-change gate in the spirit of
    E-DiT ("Elastic Diffusion Transformer"), or a static every-N-steps schedule;
  * *what to emit when skipping* — a cached residual: of the whole block stack after the gate blocks ("stack"), or of
    each block ("block").

This file is the engine: stream bookkeeping (reuses in a row, which rows have a cache), running only the rows that
compute, and applying predicted residuals; it asks its gate at fixed points and never tests the gate's name.
Decisions are per batch row and per conditioning stream; state lives in the run's `RunState`, never on the patch.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ..context import StepContext
from ..memory import AUTO, StateShape, validate_memory_gib
from ..patch import BlockCall, DiTPatch, RunBlock
from ..state import RunState, StreamState
from ..parallel.comm import agree_all
from .gates import GATES as GATE_TYPES, Gate, to_host
from .predictors import ForecastConfig, Predictor, forecast_onto
from .schedule import TIME_AXES, ScheduleWindow, forecast_time, too_short_note

GATES = tuple(GATE_TYPES)  # the gates by name (`gates.py`)
GRANULARITIES = ("stack", "block", "span")


@dataclass(frozen=True)
class BlockCacheConfig:
    """Settings of the block cache.

    threshold: accumulated relative change under which a row reuses (first_block / block gates); 0 never reuses,
        which makes the output identical to the unpatched model.
    gate: "first_block" (compute `gate_blocks`, skip the rest while their output is steady), "cg" (compute
        `gate_blocks`, skip the rest while the gate blocks' own forecast matches them: CG-Taylor's confidence gate),
        "block" (decide each block from how far its input moved since it was last computed), or "static" (compute
        on a fixed budget, at most `interval` steps apart, spread evenly).
    granularity: "stack" reuses the residual of all blocks after the gate blocks, "block" each block's own residual,
        "span" one residual over the last block kind's blocks: on models with several block kinds (Flux, HunyuanVideo:
        double then single blocks), whose stack is not one stream from start to end, the single blocks are skipped
        as one span and the others always run (one hidden state kept, where "stack" keeps per-block residuals there);
        on one-kind models the same as "stack". The block gate always works per block.
    """

    threshold: float = 0.1
    gate: str = "first_block"
    granularity: str = "stack"
    gate_blocks: int = 1
    interval: int = 2
    start_percent: float = 0.0
    end_percent: float = 1.0
    warmup_steps: int = 1
    final_steps: int = 1
    max_consecutive: int = 3
    forecast_order: int = 0   # 0 reuses the cached residual; 1-3 extrapolate it (TaylorSeer) from computed steps
    forecast: ForecastConfig | None = None  # another predictor (Spectrum, blends); None: Taylor of forecast_order
    forecast_time: str = "step"  # "step" (the scheduler's time; measured best) or "sigma"
    min_steps: int = 0  # shorter schedules run unpatched (forecasting sets 10: too few steps to fit a forecast)
    # State budget in GiB: -1 auto (accel/memory.py), 0 no limit (exactly this setting), else a size; over it the
    # run degrades in the order of `budget.LADDER` before anything is allocated, and its log line says so.
    memory_gib: float = AUTO

    def __post_init__(self):
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.forecast_time not in TIME_AXES:
            raise ValueError(f"forecast_time must be one of {TIME_AXES}, got {self.forecast_time!r}")
        if self.threshold < 0:
            raise ValueError(f"threshold must be >= 0 (0 turns caching off), got {self.threshold}")
        self.window  # validates the schedule window
        if self.gate_blocks < 1 and self.probes_first_blocks:
            raise ValueError(f"the {self.gate} gate needs gate_blocks >= 1")
        if not 0 <= self.forecast_order <= 3:
            raise ValueError(f"forecast_order must be 0 (reuse) to 3, got {self.forecast_order}")
        if self.interval < 1 or self.max_consecutive < 0:
            raise ValueError("interval must be >= 1 and max_consecutive >= 0")
        validate_memory_gib(self.memory_gib)

    @property
    def predictor(self) -> ForecastConfig:
        return self.forecast if self.forecast is not None else ForecastConfig("taylor", order=self.forecast_order)

    @property
    def gate_type(self) -> Gate:
        """The gate strategy this setting names (`gates.GATES`)."""
        return GATE_TYPES[self.gate]

    @property
    def probes_first_blocks(self) -> bool:
        return self.gate_type.probes_first_blocks

    @functools.cached_property  # asked at every block; a frozen config's window never changes
    def window(self) -> ScheduleWindow:
        return ScheduleWindow.of(self)

    @property
    def per_block(self) -> bool:
        return self.gate_type.per_block or self.granularity == "block"

    @property
    def span_start(self) -> int:
        """The first block that may be skipped."""
        return self.gate_blocks if self.probes_first_blocks else 0

    @property
    def off(self) -> bool:
        return self.gate_type.off(self)


@dataclass
class BlockCacheStream(StreamState):
    """One conditioning stream's cache; tensors hold that stream's rows only. What a gate keeps is its own (`gate`)."""

    consecutive: torch.Tensor | None = None        # (rows,) reuses in a row
    have_cache: torch.Tensor | None = None         # (rows,) a residual exists for the row
    gate: object | None = None                     # the gate's own state (`Gate.state_type`)
    stack_residual: dict[str, Predictor] = field(default_factory=dict)
    block_residual: dict[tuple[int, str], Predictor] = field(default_factory=dict)
    reuse: torch.Tensor | None = None              # span gates: this call's decision for the span
    span_input: dict[str, torch.Tensor] = field(default_factory=dict)
    # The streams its per-block histories were last kept with (`_call_group`): one history over the batch of a call
    # whose streams tile it, else its own; a change of grouping starts the histories afresh.
    residual_group: tuple | None = None

    def reset(self) -> None:
        self.__init__()


@dataclass
class BlockCacheRun:
    """Run-wide (not per-stream) data of the block cache."""

    stack_input: torch.Tensor | None = None     # this call's first-block input (a copy for the first-block gate)
    total_steps: int = 0
    span_compute_rows: list[int] | None = None  # this call's rows to compute, read back once per call
    several_kinds: bool = False                 # the model has several block kinds (reuse was per block)
    config: BlockCacheConfig | None = None      # this run's setting: the configured one, or cheaper to fit memory
    budget_note: str = ""                       # what the memory budget did, for the log line
    leader: dict = field(default_factory=dict)  # (step, decision point, branch) -> the decision its first call made
    call_streams: list | None = None            # this model call's (stream, state) pairs, looked up once per call
    block_inputs: dict | None = None            # this block call's input copies (`stable_input`)
    masks: dict = field(default_factory=dict)   # (host decision, device) -> its reuse mask, made once per run


class BlockCachePatch(DiTPatch):
    name = "blockcache"
    exclusive = "skipping"
    run_type = BlockCacheRun
    keeps_ledger = True  # the host counts the row-blocks it sees and lets run: its log line's speedup

    def __init__(self, config: BlockCacheConfig = BlockCacheConfig(), name: str = "blockcache"):
        self.config = config
        self.name = name

    # ---- helpers -----------------------------------------------------------------------------------------
    def time(self, ctx: StepContext) -> float:
        """The time axis forecasts are made on: sigma, or the schedule's own (step) time, 1 -> 0 like sigma."""
        return forecast_time(ctx, self.config.forecast_time)

    def streams(self, run: RunState, ctx: StepContext, hidden: torch.Tensor):
        """Each stream of the call with its state (created on first use: the gate's own state with it)."""
        # State is keyed on the first block's input, whatever block asks: a Flux single block's joint sequence
        # has another shape than a double block's image stream, and must not look like a new resolution.
        stats = self.run_data(run)
        if stats.call_streams is not None:  # asked at every block: looked up once per model call
            return stats.call_streams
        like = stats.stack_input
        like = hidden if like is None else like
        found = []
        for s in ctx.streams:
            state = run.stream_state(self.name, s.key, like[s.rows], BlockCacheStream)
            rows = s.rows.stop - s.rows.start
            if state.have_cache is None:
                state.gate = self._config(run).gate_type.new_state(rows, hidden.device)
                state.consecutive = torch.zeros(rows, dtype=torch.int32, device=hidden.device)
                state.have_cache = torch.zeros(rows, dtype=torch.bool, device=hidden.device)
            found.append((s, state))
        group = _call_group(found, like.shape[0])
        if any(state.residual_group != group for _, state in found):
            for _, state in found:  # a new grouping: histories kept with the old one would be stale for it
                state.block_residual.clear()
                state.residual_group = group
        if stats.stack_input is not None:
            stats.call_streams = found
        return found

    def stable_input(self, run: RunState, call: BlockCall) -> torch.Tensor:
        """A copy of the block's input that stays as it is while the block runs (blocks may update their input in
        place): made once per block call, shared by the gate and the residual."""
        stats = self.run_data(run)
        if stats.block_inputs is None:
            stats.block_inputs = {k: call.args[k].clone() for k in call.stream_keys if call.args.get(k) is not None}
        return stats.block_inputs[call.stream_keys[0]]

    def _config(self, run: RunState) -> BlockCacheConfig:
        """This run's setting (planned against the memory budget at its first call)."""
        return self.run_data(run).config or self.config

    def memory_fit(self, shape: StateShape, free_memory: int | None, total_steps: int, device: torch.device):
        """The setting a run at `shape` would use within the memory budget, and its planned bytes (`memory.Fit`)."""
        from .budget import fit_block_cache
        return fit_block_cache(self, shape, free_memory, total_steps, device)

    # ---- hooks -------------------------------------------------------------------------------------------
    def _per_block(self, run: RunState, call: BlockCall) -> bool:
        # A residual over the whole stack needs streams of one shape from start to end; models with several block
        # kinds (Flux: double then single, on a joint sequence) reuse per block instead, or over the last kind
        # ("span").
        cfg = self._config(run)
        # "span" needs the loop's layout to find where the last kind starts (every host call carries it).
        return cfg.per_block or (len(call.layout_kinds) > 1 and (cfg.granularity != "span" or not call.layout))

    def _per_block_config_or_seen(self, run: RunState) -> bool:
        cfg = self._config(run)
        return cfg.per_block or (self.run_data(run).several_kinds and cfg.granularity != "span")

    def _span_start(self, cfg: BlockCacheConfig, call: BlockCall) -> int:
        """The first block that may be skipped in this model: after the gate blocks, and for "span" on a model with
        several block kinds, the first block of its last kind."""
        start = cfg.span_start
        if cfg.granularity == "span" and len(call.layout_kinds) > 1 and call.layout:
            last = call.layout_kinds[-1]
            start = max(start, next(i for i, (kind, _) in enumerate(call.layout) if kind == last))
        return start

    def before_blocks(self, run: RunState, ctx: StepContext, call: BlockCall) -> None:
        stats = self.run_data(run)
        if stats.config is None:  # the run's first call: fit the state to its budget before allocating any
            from .budget import plan_block_cache
            stats.config, stats.budget_note = plan_block_cache(self, StateShape.of(call, call.hidden, ctx), run,
                                                               ctx.total_steps, call.hidden.device)
        cfg = stats.config
        # The first-block gate needs the stack input's values after block 0 ran, and ComfyUI's blocks may update
        # their input in place (Flux's and LTX's addcmul_): keep a copy then. Otherwise only its shape is used, and
        # a zero-stride stand-in of that shape keeps no activation alive between calls.
        stats.stack_input = call.hidden.clone() if cfg.probes_first_blocks else \
            call.hidden.new_zeros(()).expand(call.hidden.shape)
        stats.call_streams = None  # this call's streams are looked up anew, against its own stack input
        stats.total_steps = max(stats.total_steps, ctx.total_steps)
        stats.several_kinds = len(call.layout_kinds) > 1
        cfg.gate_type.at_call_start(self, run, ctx, call, cfg)

    def around_block(self, run: RunState, ctx: StepContext, call: BlockCall, run_block: RunBlock) -> dict:
        cfg = self._config(run)
        stats = self.run_data(run)
        if cfg.off:  # nothing is ever reused: keep nothing (the memory budget's last rung relies on it)
            return run_block(call.args)
        span_start = self._span_start(cfg, call)
        if call.position < span_start:
            out = run_block(call.args)
            if call.position == cfg.span_start - 1:  # the gate blocks ran (a gate that probes them)
                cfg.gate_type.after_gate_blocks(self, run, ctx, call, out, cfg)
            return out
        per_block = self._per_block(run, call)
        stats.block_inputs = None
        cfg.gate_type.at_block(self, run, ctx, call, cfg)
        if call.position == span_start and not per_block:
            for s, state in self.streams(run, ctx, call.hidden):
                state.span_input = {k: call.args[k][s.rows].clone() for k in call.stream_keys}
        reuse, reuse_rows = self._batch_reuse(run, ctx, call.hidden)
        if cfg.gate_type.per_block or stats.span_compute_rows is None:
            # The host sync: once per model call (once per block for the block gate, whose decision is per block
            # and already on the host).
            reuse_rows = to_host(reuse) if reuse_rows is None else reuse_rows
            stats.span_compute_rows = [i for i, r in enumerate(reuse_rows) if not r]
        compute_rows = stats.span_compute_rows
        if per_block and compute_rows:
            self.stable_input(run, call)  # the block runs and may update its input in place: residuals need a copy
        elif per_block and stats.block_inputs is None:
            stats.block_inputs = {k: call.args[k] for k in call.stream_keys if call.args.get(k) is not None}
        inputs, stats.block_inputs = stats.block_inputs, None
        out = run_rows(run_block, call, compute_rows)
        if per_block:
            self._apply_block_residuals(run, ctx, call, inputs, out, reuse, compute_rows)
        return out

    def after_blocks(self, run: RunState, ctx: StepContext, call: BlockCall, out: dict) -> dict:
        if self._per_block(run, call) or self._config(run).off:
            self._finish_rows(run, ctx, call.hidden)
            return out
        out = dict(out)
        compute_rows = self.run_data(run).span_compute_rows
        streams = list(self.streams(run, ctx, call.hidden))
        for key in call.stream_keys:
            if out.get(key) is None:
                continue
            parts = []
            for s, state in streams:
                final = None
                if key in state.span_input:
                    predictor = state.stack_residual.get(key)
                    if predictor is None:
                        predictor = state.stack_residual[key] = self._config(run).predictor.build()
                    final = _emit_residual(predictor, state.reuse, state.span_input[key], out[key][s.rows],
                                           self.time(ctx), _rows_ran(compute_rows, s.rows))
                parts.append((s.rows, final))
            out[key] = _assemble(out[key], parts)
        for _, state in streams:
            state.span_input = {}
        self._finish_rows(run, ctx, call.hidden)
        return out

    def on_run_end(self, run: RunState) -> str | None:
        ledger = run.ledger_of(self.name)
        if ledger.row_blocks_total == 0:
            return None
        stats, cfg, held = self.run_data(run), self._config(run), self.state_held(run)
        setting = cfg.gate_type.setting(cfg)
        reuse = "block" if self._per_block_config_or_seen(run) else cfg.granularity
        line = (f"{self.name} ({cfg.gate} gate, {setting}, {reuse} residuals, {cfg.predictor.describe()}): computed "
                f"{ledger.row_blocks_run}/{ledger.row_blocks_total} block evaluations, "
                f"{ledger.row_block_speedup:.2f}x block compute speedup; cache held {held / 2**20:.2f} MiB on the model's device; {stats.budget_note}")
        if cfg.off:
            line += ". Caching is off at this setting: outputs equal the unpatched model."
        elif stats.total_steps and ledger.row_blocks_run == ledger.row_blocks_total:
            if cfg.window.too_short(stats.total_steps):
                verb = "forecast" if stats.total_steps < cfg.min_steps else "cache"
                line += too_short_note(cfg.window, stats.total_steps, verb)
            else:
                line += ". Nothing was skipped: raise the threshold or widen start/end percent."
        return line

    # ---- decisions (the gates' shared parts) --------------------------------------------------------------
    @torch.compiler.disable  # host bookkeeping keyed by step: traced, its growing dict recompiled every step
    def decide_jointly(self, run, ctx, point, proposals) -> torch.Tensor:
        """One decision per sample: it reuses only if each of its streams (cond, uncond, ...) may, because CFG
        multiplies any cond/uncond mismatch by the guidance scale. Streams of one step that arrive in separate
        model calls follow the first call's decision. Outside the schedule window nothing reuses."""
        cfg = self._config(run)
        on_host = isinstance(proposals[0][1], list)  # a gate that decides on the host (`decision_rows`)
        joint = proposals[0][1]
        for _, reuse, _ in proposals[1:]:
            if on_host:
                joint = [a and b for a, b in zip(joint, reuse)] if len(reuse) == len(joint) else [False] * len(joint)
            else:
                joint = joint & reuse if reuse.shape == joint.shape else torch.zeros_like(joint)
        if not cfg.window.allows_reuse(ctx) or cfg.off:
            joint = [False] * len(joint) if on_host else torch.zeros_like(joint)
        # Under CFG parallelism this call holds some of the sample's streams; the others' groups answer too.
        joint = agree_all(joint)
        leader = self.run_data(run).leader
        # A branch pass (perturbation guidance) has streams of its own: it must not follow the main pass's decision.
        key = (ctx.step, point, getattr(ctx, "branch", None))
        previous = leader.get(key)
        if previous is not None and _same_kind(previous, joint):
            return previous
        leader[key] = joint
        return joint

    def _batch_reuse(self, run, ctx, hidden: torch.Tensor) -> tuple[torch.Tensor, list[bool] | None]:
        """The call's reuse mask over its batch rows, and its host copy where the gate decided on the host."""
        gate = self._config(run).gate_type
        streams = self.streams(run, ctx, hidden)
        rows = [gate.decision_rows(state) for _, state in streams]
        if all(r is not None for r in rows):
            flat = [r for stream_rows in rows for r in stream_rows]
            # A few patterns recur at every block (all compute, all reuse): one read-only mask each per run.
            masks = self.run_data(run).masks
            key = (tuple(flat), hidden.device)
            mask = masks.get(key)
            if mask is None:
                mask = masks[key] = torch.tensor(flat, dtype=torch.bool).to(hidden.device)
            return mask, flat
        parts = []
        for s, state in streams:
            decision = gate.decision(state)
            parts.append(decision.to(hidden.device) if decision is not None else
                         torch.zeros(s.rows.stop - s.rows.start, dtype=torch.bool, device=hidden.device))
        return torch.cat(parts), None

    def _apply_block_residuals(self, run, ctx, call: BlockCall, inputs: dict, out: dict,
                               reuse: torch.Tensor, compute_rows: list[int]) -> None:
        p = call.position
        streams = list(self.streams(run, ctx, call.hidden))
        time = self.time(ctx)
        grouped = streams[0][1].residual_group is not None
        for key in call.stream_keys:
            if out.get(key) is None or key not in inputs:
                continue
            if grouped:
                # One history over the whole batch, shared by the call's streams (each row is still its own: the
                # values are those of per-stream histories, with half the ops under CFG).
                predictor = streams[0][1].block_residual.get((p, key))
                if predictor is None:
                    predictor = self._config(run).predictor.build()
                    for _, state in streams:
                        state.block_residual[(p, key)] = predictor
                emitted = _emit_residual(predictor, reuse, inputs[key], out[key], time,
                                         _rows_ran(compute_rows, slice(0, call.hidden.shape[0])))
                if emitted is not None:
                    out[key] = emitted
                continue
            parts = []
            for s, state in streams:
                predictor = state.block_residual.get((p, key))
                if predictor is None:
                    predictor = state.block_residual[(p, key)] = self._config(run).predictor.build()
                parts.append((s.rows, _emit_residual(predictor, reuse[s.rows], inputs[key][s.rows], out[key][s.rows],
                                                     time, _rows_ran(compute_rows, s.rows))))
            out[key] = _assemble(out[key], parts)

    def _finish_rows(self, run, ctx, hidden: torch.Tensor) -> None:
        """End of a model call: rows that reused count a consecutive skip; rows that computed have a cache now."""
        self.run_data(run).span_compute_rows = None
        for _, state in self.streams(run, ctx, hidden):
            reused = state.reuse if state.reuse is not None else torch.zeros_like(state.have_cache)
            state.consecutive = torch.where(reused, state.consecutive + 1, torch.zeros_like(state.consecutive))
            state.have_cache = torch.ones_like(state.have_cache)
            state.reuse = None
            self._config(run).gate_type.end_call(state.gate)
        self.run_data(run).call_streams = None


def _call_group(streams, batch: int) -> tuple | None:
    """The call's streams as one group for the per-block histories: several streams whose rows tile the batch in
    order (ComfyUI's cond + uncond in one call); None: each stream keeps its own."""
    rows = [s.rows for s, _ in streams]
    if len(rows) < 2 or rows[0].start != 0 or rows[-1].stop != batch or \
            any(a.stop != b.start for a, b in zip(rows, rows[1:])):
        return None
    return tuple((s.key, s.rows.start, s.rows.stop) for s, _ in streams)


def _same_kind(previous, joint) -> bool:
    """Whether a leader's decision can stand for this call's: as many rows, on the same side of the host line."""
    if isinstance(previous, list) or isinstance(joint, list):
        return isinstance(previous, list) and isinstance(joint, list) and len(previous) == len(joint)
    return previous.shape == joint.shape and previous.device == joint.device


def run_rows(run_block: RunBlock, call: BlockCall, compute_rows: list[int]) -> dict:
    """Run the block on some rows only; the others pass through unchanged (their caller adds what they reuse)."""
    batch = call.hidden.shape[0]
    if len(compute_rows) == batch:
        return run_block(call.args)
    passthrough = {k: call.args[k] for k in call.stream_keys}
    if not compute_rows:
        return passthrough
    index = torch.tensor(compute_rows, device=call.hidden.device)
    sub_args = {k: (v.index_select(0, index) if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == batch
                    else v) for k, v in call.args.items()}
    sub_out = run_block(sub_args)
    out = {}
    for k in call.stream_keys:
        if sub_out.get(k) is None:
            out[k] = sub_out.get(k)
            continue
        full = call.args[k].clone()
        full.index_copy_(0, index, sub_out[k])
        out[k] = full
    return out


def _rows_ran(compute_rows: list[int] | None, rows: slice) -> str:
    """Whether "all", "none" or "some" of a stream's rows (`rows` of the batch) are in `compute_rows` (the host's
    copy of the call's decision; None: not known, "some")."""
    if compute_rows is None:
        return "some"
    ran = sum(rows.start <= i < rows.stop for i in compute_rows)
    return "all" if ran == rows.stop - rows.start else "none" if ran == 0 else "some"


def _emit_residual(predictor, reuse: torch.Tensor, start: torch.Tensor, computed: torch.Tensor,
                   time: float, ran: str = "some") -> torch.Tensor | None:
    """One call of a skipped span (or block) for one stream: rows in `reuse` emit `start` plus the predicted residual
    instead of what was `computed` (their pass-through); the other rows' residual feeds the predictor (every row's,
    while it has nothing yet). Returns the rows' output, or None where nothing is emitted.

    `ran` is what the host already knows of the stream's rows (`_rows_ran`): when all ran nothing is forecast and the
    predictor may take its all-rows update; when none ran the emitted rows need no mask, and a predictor whose update
    touches only the computed rows (`masked_update`: Taylor; a spectral fit keeps its own time history) is not
    updated. The same values as the masked path, bit for bit, with far fewer whole-activation passes."""
    if predictor.empty:
        predictor.update(torch.ones_like(reuse), computed - start, time, all_rows=True)
        return None
    emitted = None
    if ran == "none":
        emitted = forecast_onto(predictor, start, time)
    elif ran == "some":
        mask = reuse.view(-1, *[1] * (computed.dim() - 1))
        emitted = torch.where(mask, start + predictor.predict(time), computed)
    if ran != "none" or not getattr(predictor, "masked_update", False):
        predictor.update(~reuse, computed - start, time, all_rows=ran == "all")
    return emitted


def _assemble(whole: torch.Tensor, parts: list[tuple[slice, torch.Tensor | None]]) -> torch.Tensor:
    """`whole` with each stream's rows replaced by its emitted values (None: keep the computed rows): one
    concatenation when every stream emitted, else one copy written stream by stream."""
    emitted = [(rows, values) for rows, values in parts if values is not None]
    if not emitted:
        return whole
    tiled = parts[0][0].start == 0 and all(a.stop == b.start for (a, _), (b, _) in zip(parts, parts[1:])) \
        and parts[-1][0].stop == whole.shape[0]
    if len(emitted) == len(parts) and tiled:
        return emitted[0][1] if len(emitted) == 1 else torch.cat([values for _, values in emitted])
    whole = whole.clone()
    for rows, values in emitted:
        whole[rows] = values
    return whole
