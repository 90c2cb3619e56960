"""SoftPAG: perturbation guidance on chosen attention heads, with a continuous softness, branched off the cond pass.

"Fine-Grained Perturbation Guidance via Attention Head Selection" (Ahn et al., 2025, arXiv:2506.10978): the weak
model of perturbation guidance replaces the self-attention map of selected heads by a blend toward the identity,
`(1 - alpha) * softmax(QK^T) V + alpha * V` (alpha = 1 is PAG's identity attention on those heads), and the sampler
steps away from it: `out = cfg_out + scale * (cond - perturbed)`.

Two passes share this patch:
  * the main (CFG) pass: nothing changes; at the first perturbed layer the cond streams' block input is saved;
  * the perturbed branch, an extra model call the guidance function makes (marked with BRANCH_KEY): the blocks
    before the first perturbed layer are equal to the cond pass's, so they are skipped and the saved input is fed
    to the first perturbed layer; the selected heads are perturbed from there on.
The branch's streams carry their own keys (`StepContext` appends the branch name), so other patches' per-stream
state (the block cache's residuals) keeps the branch apart from the cond stream it started from.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import torch

from ...kernels.logs import warn_once
from ..context import BRANCH_KEY, StepContext, locate_step
from ..memory import AUTO, UNLIMITED, Fit, MemoryBudget, StateShape, fit, planned_state, validate_memory_gib
from ..patch import AttentionCall, BlockCall, DiTPatch, RunAttention, RunBlock
from ..state import RunState
from .heads import ALL_HEADS, HeadPair, by_layer, format_heads, normalise

log = logging.getLogger("dit_accel")

BRANCH = "softpag"  # the branch name this patch answers to in transformer_options[BRANCH_KEY]


@dataclass(frozen=True)
class SoftPAGConfig:
    """Settings of head-level perturbation guidance.

    heads: (layer, head) pairs to perturb; a head of None perturbs every head of that layer (layer-level PAG).
    scale: guidance strength s in `cfg_out + s * (cond - perturbed)`; 0 turns guidance off (exact output).
    alpha: softness, the weight of the identity map; 0 leaves attention as it is (exact output), 1 is PAG.
    start_percent / end_percent: guidance runs on steps whose schedule percent lies in [start, end).
    reuse_prefix: skip the blocks before the first perturbed layer in the branch (equal to the cond pass's); the
        cond pass's input to that layer is kept until the branch (the method's one state: rows x tokens x width).
    memory_gib: budget for that state, in GiB (-1 auto, 0 no limit; `accel/memory.py`); over it the branch
        recomputes the prefix instead (`BUDGET_LADDER`).
    """

    heads: tuple[HeadPair, ...] = ()
    scale: float = 2.0
    alpha: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    reuse_prefix: bool = True
    memory_gib: float = AUTO

    def __post_init__(self):
        object.__setattr__(self, "heads", normalise(self.heads))
        validate_memory_gib(self.memory_gib)
        if self.scale < 0:
            raise ValueError(f"scale must be >= 0 (0 turns guidance off), got {self.scale}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (0: attention unchanged, 1: identity attention), got "
                             f"{self.alpha}")
        if not 0.0 <= self.start_percent <= self.end_percent <= 1.0:
            raise ValueError(f"need 0 <= start_percent <= end_percent <= 1, got start {self.start_percent}, end "
                             f"{self.end_percent}: set start_percent below end_percent")

    @property
    def off(self) -> bool:
        return self.scale == 0 or self.alpha == 0 or not self.heads

    @property
    def first_layer(self) -> int:
        return min(layer for layer, _ in self.heads) if self.heads else 0

    def guides(self, percent: float) -> bool:
        """Whether a step at this schedule percent gets the perturbed branch."""
        return not self.off and self.start_percent <= percent < self.end_percent

    @property
    def keeps_prefix_input(self) -> bool:
        return self.reuse_prefix and self.first_layer > 0


# What the memory budget gives up, in order, when the kept cond-pass input would exceed it: the branch then computes
# its first blocks itself (exact, a few blocks more per guided step) and nothing is kept between passes.
BUDGET_LADDER = (("the branch recomputes the blocks before the first perturbed layer instead of keeping the cond "
                  "pass's input there", lambda c: dataclasses.replace(c, reuse_prefix=False) if c.reuse_prefix
                  else None),)


def guide(cfg_out: torch.Tensor, cond_out: torch.Tensor, perturbed_out: torch.Tensor, scale: float) -> torch.Tensor:
    """Perturbation guidance on top of CFG (or on the cond prediction alone when CFG is off)."""
    return cfg_out + (cond_out - perturbed_out) * scale


def schedule_percent(sigma: torch.Tensor | float, sample_sigmas) -> float | None:
    """The step percent of `sigma` in the sampler's schedule (StepContext's rule); None when the schedule is unknown."""
    value = float(sigma.reshape(-1)[0]) if isinstance(sigma, torch.Tensor) else float(sigma)
    step, total = locate_step(value, sample_sigmas)
    return step / total if total else None


def soft_identity_attention(call: AttentionCall, heads: tuple[int, ...] | None, alpha: float,
                            run_attention: RunAttention) -> torch.Tensor:
    """(1 - alpha) * attention + alpha * V on `heads` (None: all), the other heads untouched; no map is built."""
    if alpha == 1.0 and heads is None:
        return call.v.clone()  # PAG on the whole layer: nothing to attend
    out = run_attention(call)
    index = slice(None) if heads is None else list(heads)
    # All heads run through the backend (masks and kernels stay as the family laid them out); only the selected
    # heads are blended, so the others equal the unperturbed attention exactly.
    out = out.clone()
    v = call.v[:, index].to(out.dtype)
    out[:, index] = v if alpha == 1.0 else torch.lerp(out[:, index], v, alpha)
    return out


@dataclass
class SoftPAGRun:
    """Run-wide data: the cond pass's saved inputs, the block being run and what the branch cost."""

    saved: dict[str, tuple[int, dict[str, torch.Tensor]]] = field(default_factory=dict)  # source key -> (step, ...)
    layer: int | None = None           # position of the block running now (attention calls read it)
    skip_prefix: bool = False          # this branch call feeds the saved input to the first perturbed layer
    ledger_start: int = 0
    main_row_blocks: int = 0           # block evaluations x rows, main passes
    branch_row_blocks: int = 0         # the same, perturbed branches
    branch_steps: set = field(default_factory=set)
    prefix_reused: int = 0             # branch calls that skipped the prefix
    perturbed_calls: int = 0           # attention calls perturbed
    total_steps: int = 0
    warned: set = field(default_factory=set)   # warn-once keys of this run (kernels/logs.warn_once)
    config: SoftPAGConfig | None = None        # this run's setting: the configured one, or cheaper to fit memory
    budget_note: str = ""                      # what the memory budget did, for the log line


class SoftPAGPatch(DiTPatch):
    """Perturbs the selected heads in the branch call and saves/serves the shared prefix. Install it outermost
    (`AccelHost.with_patch(patch, first=True)`) so it sees every block of both passes."""

    name = "softpag"
    run_type = SoftPAGRun  # this patch's run data (`run_data(run)`), like every patch's

    def __init__(self, config: SoftPAGConfig, heads_source: str = ""):
        self.config = config
        self.layers = by_layer(config.heads)
        self.heads_source = heads_source  # how the heads were chosen, for the summary line

    def _is_branch(self, ctx: StepContext) -> bool:
        return ctx.branch == BRANCH

    def _config(self, run: RunState) -> SoftPAGConfig:
        return self.run_data(run).config or self.config

    def memory_fit(self, shape: StateShape, free_memory: int | None, total_steps: int, device: torch.device) -> Fit:
        """The setting a run at `shape` would use within the memory budget, and its planned bytes (`memory.Fit`):
        the kept input measured from this patch's own hooks (`memory.planned_state`)."""
        return _plan(self, shape, free_memory, total_steps)

    # ---- block hooks -------------------------------------------------------------------------------------
    def before_blocks(self, run: RunState, ctx: StepContext, call: BlockCall) -> None:
        data: SoftPAGRun = self.run_data(run)
        if data.config is None:  # the run's first call: fit the kept input to the budget before keeping any
            result = self.memory_fit(StateShape.of(call, call.hidden, ctx), run.free_memory, ctx.total_steps,
                                     call.hidden.device)
            data.config, data.budget_note = result.config, result.describe()
        data.ledger_start = run.ledger.blocks_run
        data.total_steps = max(data.total_steps, ctx.total_steps)
        data.skip_prefix = False
        if self._is_branch(ctx) and data.config.keeps_prefix_input:
            data.skip_prefix = all(self._saved_for(data, ctx, s) is not None for s in ctx.streams)
        elif not self._is_branch(ctx):
            data.saved = {k: v for k, v in data.saved.items() if v[0] == ctx.step}  # drop older steps' inputs

    def around_block(self, run: RunState, ctx: StepContext, call: BlockCall, run_block: RunBlock) -> dict:
        data: SoftPAGRun = self.run_data(run)
        first = self.config.first_layer
        args = call.args
        if self._is_branch(ctx):
            if data.skip_prefix and call.position < first:
                return {k: args[k] for k in call.stream_keys}  # not computed: the first perturbed layer's input
            if data.skip_prefix and call.position == first:  # is the cond pass's, fed in here
                args = self._restore(data, ctx, call) or args
        elif call.position == first and self._config(run).keeps_prefix_input and self.config.guides(ctx.percent) \
                and call.hidden.shape[0] == ctx.batch_size:
            for s in ctx.streams:
                if s.kind == "cond":
                    data.saved[s.key] = (ctx.step, {k: args[k][s.rows].clone() for k in call.stream_keys
                                                    if isinstance(args.get(k), torch.Tensor)})
        data.layer = call.position
        try:
            return run_block(args)
        finally:
            data.layer = None

    def after_blocks(self, run: RunState, ctx: StepContext, call: BlockCall, out: dict) -> dict:
        data: SoftPAGRun = self.run_data(run)
        row_blocks = (run.ledger.blocks_run - data.ledger_start) * ctx.batch_size
        if self._is_branch(ctx):
            data.branch_row_blocks += row_blocks
            data.branch_steps.add(ctx.step)
            data.prefix_reused += int(data.skip_prefix)
            data.skip_prefix = False
        else:
            data.main_row_blocks += row_blocks
        return out

    def _saved_for(self, data: SoftPAGRun, ctx: StepContext, stream):
        entry = data.saved.get(stream.source_key or "")
        if entry is None or entry[0] != ctx.step:
            return None
        tensors = entry[1]
        rows = stream.rows.stop - stream.rows.start
        return tensors if all(t.shape[0] == rows for t in tensors.values()) else None

    def _restore(self, data: SoftPAGRun, ctx: StepContext, call: BlockCall) -> dict | None:
        """The first perturbed layer's args with the cond pass's saved streams in place of what arrived."""
        parts = [self._saved_for(data, ctx, s) for s in ctx.streams]
        args = dict(call.args)
        for key in call.stream_keys:
            if not isinstance(args.get(key), torch.Tensor):
                continue
            restored = torch.cat([p[key] for p in parts]) if len(parts) > 1 else parts[0][key]
            if restored.shape != args[key].shape:
                warn_once("shape", "dit-accel softpag: the saved cond-pass input does not fit the perturbed call; "
                          "computing this branch's blocks from the start instead", said=data.warned)
                return None
            args[key] = restored
        for s in ctx.streams:
            data.saved.pop(s.source_key or "", None)  # used once: free it
        return args

    # ---- attention hook ----------------------------------------------------------------------------------
    def around_attention(self, run: RunState, ctx: StepContext, call: AttentionCall,
                         run_attention: RunAttention) -> torch.Tensor:
        data: SoftPAGRun = self.run_data(run)
        if not self._is_branch(ctx) or data.layer is None or data.layer not in self.layers:
            return run_attention(call)
        if call.kind == "cross" or call.q.shape[2] != call.k.shape[2]:
            return run_attention(call)  # SoftPAG blends self-attention maps only
        heads = self.layers[data.layer]
        if heads is not ALL_HEADS:
            total = call.all_heads  # under multi-GPU the call holds heads head_offset.. of the model's `total`
            valid = tuple(h for h in heads if h < total)
            if len(valid) < len(heads):
                warn_once("heads", f"dit-accel softpag: layer {data.layer} has {total} heads; heads "
                          f"{[h for h in heads if h >= total]} were ignored", said=data.warned)
            if not valid:
                return run_attention(call)
            local = tuple(h - call.head_offset for h in valid if 0 <= h - call.head_offset < call.heads)
            data.perturbed_calls += 1  # counted on every rank alike, whichever holds the heads
            if not local:
                return run_attention(call)
            return soft_identity_attention(call, None if len(local) == call.heads else local, self.config.alpha,
                                           run_attention)
        data.perturbed_calls += 1
        return soft_identity_attention(call, heads, self.config.alpha, run_attention)

    # ---- summary -----------------------------------------------------------------------------------------
    def on_run_end(self, run: RunState) -> str | None:
        data: SoftPAGRun = self.run_data(run)
        cfg = self.config
        if data.main_row_blocks == 0:
            return None
        extra = data.branch_row_blocks / data.main_row_blocks
        guided = len(data.branch_steps)
        per_step = extra * (data.total_steps / guided) if guided and data.total_steps else 0.0
        run.metrics["guidance_extra_cost"] = extra
        run.metrics["guidance_steps"] = guided
        source = f" [{self.heads_source}]" if self.heads_source else ""
        line = (f"softpag (heads {format_heads(cfg.heads)}{source}, alpha {cfg.alpha:g}, scale {cfg.scale:g}): "
                f"perturbed branch on {guided}/{data.total_steps or '?'} steps, {data.prefix_reused} of them starting "
                f"at layer {cfg.first_layer} from the cond pass; extra transformer cost +{extra:.0%} of CFG alone over "
                f"the run (+{per_step:.0%} on a guided step; a layer-level PAG pass costs +50% with CFG)")
        if data.budget_note and self.config.keeps_prefix_input:
            line += f"; kept cond-pass input: {data.budget_note}"
        if cfg.off:
            line += ". Guidance is off at this setting: outputs equal the unpatched model."
        elif guided and data.perturbed_calls == 0:
            line += ". No attention call was perturbed: check the heads against the model's layers."
        return line


def branch_options(transformer_options: dict) -> dict:
    """A copy of a call's transformer_options that marks the call as this patch's perturbed branch."""
    return {**transformer_options, BRANCH_KEY: BRANCH}


@torch.compiler.disable
def _plan(patch: SoftPAGPatch, shape: StateShape, free_memory: int | None, total_steps: int) -> Fit:
    config = patch.config
    budget = MemoryBudget.resolve(config.memory_gib, free_memory)
    steps = total_steps or 20

    def planned(c) -> tuple[int, int]:
        return planned_state(type(patch), dataclasses.replace(c, memory_gib=UNLIMITED), shape, steps, steps)
    return fit(config, BUDGET_LADDER, planned, budget)
