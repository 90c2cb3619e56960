"""The host: one per patched model, it owns the patches and connects them to the family's extension points.

It never touches ComfyUI itself; it fills a `transformer_options` dict (block replacements, attention override) and
offers the three wrapper bodies a sampler needs (run start/end, per model call). The node layer registers those as
ComfyUI wrappers; our reference sampler calls them directly. Both paths run the same code.

Per-run state never lives on the host: `start_run()` returns a fresh `RunState` that the caller stores in the
run's own `transformer_options` under RUN_KEY, and the per-call `StepContext` goes under CTX_KEY of the call's dict.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Callable

import torch

from .adapters.base import BlockKind, FamilyAdapter
from .context import StepContext
from .patch import AttentionCall, BlockCall, DiTPatch, ModelCall
from .state import AllocationScope, ComputeLedger, RunState

log = logging.getLogger("dit_accel")

HOST_KEY = "dit_accel"          # the host, in model_options["transformer_options"]
RUN_KEY = "dit_accel_run"       # the current RunState, in the run's transformer_options
CTX_KEY = "dit_accel_ctx"       # the current StepContext, in one model call's transformer_options
_OURS = "_dit_accel_previous"   # attribute marking our installed functions; holds what we chained onto


@dataclass(frozen=True)
class AccelHost:
    adapter: FamilyAdapter
    patches: tuple[DiTPatch, ...] = field(default_factory=tuple)
    # How each run allocates state that outlives a model call (`RunState.persistent`): the ComfyUI bridge sets the
    # scope that keeps it out of the model compiler's capture; None allocates plainly (plain torch).
    allocation_scope: AllocationScope | None = None

    def __deepcopy__(self, memo) -> "AccelHost":
        # Immutable, and its patches keep no run state: clones of the MODEL (ComfyUI 0.8 deep-copies model_options
        # on clone) share it, so a node's patch object is the one that runs.
        return self

    def with_patch(self, patch: DiTPatch, first: bool = False) -> "AccelHost":
        """A new host with one more patch (a later node in the graph); the original is left as it was.

        `first` puts it outermost, whatever the node order: a patch that must see every block of every call (one
        that branches a call off another's saved state) asks for it."""
        rival = next((p for p in self.patches if patch.exclusive and p.exclusive == patch.exclusive), None)
        if rival is not None and rival.name != patch.name:
            raise ValueError(f"this MODEL already has a dit-accel {rival.name!r} node upstream, which also decides "
                             f"which steps or blocks to skip; a {patch.name!r} node on top would skip twice. Use "
                             "one of them (remove or bypass the other).")
        if any(p.name == patch.name for p in self.patches):
            # Per-run state is keyed by the patch's name: two of a kind would overwrite each other's caches.
            raise ValueError(f"this MODEL already has a dit-accel {patch.name!r} node upstream; use one such node "
                             "per model (remove or bypass the other one)")
        return dataclasses.replace(self, patches=(patch,) + self.patches if first else self.patches + (patch,))

    # ---- run lifecycle -------------------------------------------------------------------------------------
    def start_run(self) -> RunState:
        run = RunState() if self.allocation_scope is None else RunState(allocation_scope=self.allocation_scope)
        for p in self.patches:
            p.on_run_start(run)
        return run

    def end_run(self, run: RunState) -> list[str]:
        """Close the run (call from `finally`): every patch summarises, then all state is dropped."""
        lines = []
        try:
            for p in self.patches:
                try:
                    line = p.on_run_end(run)
                except Exception as err:  # noqa: BLE001 - a summary must never mask the sampler's own error
                    line = f"{p.name}: summary failed ({type(err).__name__}: {err})"
                if line:
                    lines.append(line)
                    log.info("dit-accel %s", line)
        finally:
            run.close()
        return lines

    def begin_call(self, transformer_options: dict, x: torch.Tensor) -> StepContext:
        """Per model call: build the step context once and leave it where the block and attention hooks find it."""
        ctx = StepContext.from_transformer_options(transformer_options, x.shape[0])
        transformer_options[CTX_KEY] = ctx
        run = transformer_options.get(RUN_KEY)
        if run is not None:
            run.ledger.model_calls += 1
        return ctx

    def diffusion_model_wrapper(self, executor: Callable, *args, **kwargs):
        """Body of a DIFFUSION_MODEL wrapper: `executor(*args, **kwargs)` runs the model's forward."""
        to = self.adapter.transformer_options_of(args, kwargs)
        if to is None or to.get(RUN_KEY) is None:
            return executor(*args, **kwargs)
        x = self.adapter.model_input(args, kwargs)
        self.begin_call(to, x)
        if not any(p.uses("around_model") for p in self.patches):
            return executor(*args, **kwargs)
        model = getattr(executor, "class_obj", None)
        blocks = len(self.adapter.block_layout(model)) if isinstance(model, torch.nn.Module) else 0
        return self.call_model(to, x, blocks, lambda: executor(*args, **kwargs))

    def call_model(self, transformer_options: dict, x: torch.Tensor, blocks: int,
                   run_model: Callable[[], torch.Tensor]):
        """Run one model call through the patches' `around_model` hooks (after `begin_call`). A call no patch let
        run to its end counts the blocks it did not reach as skipped in the ledger."""
        patches = [p for p in self.patches if p.uses("around_model")]
        run = transformer_options.get(RUN_KEY)
        if not patches or run is None:
            return run_model()
        ctx = _context(transformer_options, x.shape[0])
        call = ModelCall(x, blocks)

        def through_patches(let_run: Callable[[], torch.Tensor]) -> torch.Tensor:
            chain = let_run
            for p in reversed(patches):  # the first patch added ends up outermost
                chain = _bind_model(p, run, ctx, call, chain)
            return chain()

        # Without block hooks nobody counts the blocks a call runs: they are counted here, for the ledger's speedup.
        return _counted_model_call(run.ledger, call, through_patches, run_model,
                                   blocks_counted=any(_uses_blocks(p) for p in self.patches))

    # ---- installing into transformer_options ----------------------------------------------------------------
    def install(self, transformer_options: dict, diffusion_model: torch.nn.Module) -> None:
        """Add our block replacements and attention override, chaining onto whatever is already there."""
        if any(_uses_blocks(p) for p in self.patches):
            layout = self.adapter.block_layout(diffusion_model)
            kinds = tuple(dict.fromkeys(kind.kind for kind, _ in layout))
            plan = tuple((kind.kind, kind.stream_keys) for kind, _ in layout)
            replace = transformer_options.setdefault("patches_replace", {}).setdefault("dit", {})
            for position, (kind, index) in enumerate(layout):
                key = (kind.replace_key, index)
                previous = _unwrap(replace.get(key))
                replace[key] = _mark(self._block_replacement(kind, index, position, len(layout), kinds, previous,
                                                             plan), previous)
        if any(p.uses("around_attention") for p in self.patches):
            previous = _unwrap(transformer_options.get("optimized_attention_override"))
            transformer_options["optimized_attention_override"] = _mark(self._attention_override(previous), previous)

    def _block_replacement(self, kind: BlockKind, index: int, position: int, total: int, kinds: tuple[str, ...],
                           previous, plan: tuple = ()):
        patches = [p for p in self.patches if _uses_blocks(p)]

        adapter = self.adapter
        flatten = kind.flatten or (lambda a: a)
        unflatten = kind.unflatten or (lambda a: a)

        def replacement(family_args: dict, extra: dict) -> dict:
            original = extra["original_block"]

            def run_real(a: dict) -> dict:
                a = unflatten(a)
                return flatten(previous(a, extra) if previous is not None else original(a))

            to = family_args.get("transformer_options") or {}
            run = to.get(RUN_KEY)
            if run is None:  # called outside a dit-accel run (another sampler path): stay out of it
                return previous(family_args, extra) if previous is not None else original(family_args)
            args = flatten(family_args)
            ctx = _context(to, args[kind.stream_keys[0]].shape[0])

            call = BlockCall(position, total, kind.kind, index, args, kind.stream_keys, kinds, layout=plan,
                             image_span=adapter.image_span(kind.kind, to), grid_hint=adapter.grid_hint(to))
            if position == 0:
                for p in patches:
                    p.before_blocks(run, ctx, call)
            chain = _counted_block(run.ledger, call, run_real)
            for p in reversed(patches):  # the first patch added ends up outermost
                chain = _bind_block(p, run, ctx, call, chain)
            out = chain(args)
            if position == total - 1:
                # Innermost first, like the around_block chain unwinding: the outermost patch (sequence
                # parallelism's gather of the token shards) sees what every inner patch made of the output.
                for p in reversed(patches):
                    out = p.after_blocks(run, ctx, call, out)
            return unflatten(out)

        return replacement

    def _attention_override(self, previous):
        patches = [p for p in self.patches if p.uses("around_attention")]
        adapter = self.adapter

        # ComfyUI 0.40+ passes q/k/v as AttentionTensorContainers; without a `container_function` attribute here,
        # `wrap_attn` takes the tensors out and calls us as before (tests/comfyui/test_attention_containers.py). We
        # declare none on purpose: it would be called without `func`, and the AttentionCall keeps q/k/v to the end
        # (text rows, calibration, the soft-identity blend), so taking ownership would free no copy.
        def override(func, *args, **kwargs):
            backend = func if previous is None else (lambda *a, **k: previous(func, *a, **k))
            to = kwargs.get("transformer_options") or {}
            run = to.get(RUN_KEY)
            if run is None:
                return backend(*args, **kwargs)
            call = adapter.attention_call(backend, args, kwargs)
            ctx = _context(to, call.q.shape[0])

            def run_attention(c: AttentionCall) -> torch.Tensor:
                return c.backend(c.q, c.k, c.v)

            chain = run_attention
            for p in reversed(patches):
                chain = _bind_attention(p, run, ctx, chain)
            return adapter.attention_output(chain(call), args, kwargs)

        return override


def _context(transformer_options: dict, batch_size: int) -> StepContext:
    """The call's step context: the one the DIFFUSION_MODEL wrapper built, or built here for families that have
    no such wrapper (SD3) or a call the wrapper did not see."""
    ctx = transformer_options.get(CTX_KEY)
    if ctx is None or ctx.batch_size != batch_size:
        ctx = StepContext.from_transformer_options(transformer_options, batch_size)
        transformer_options[CTX_KEY] = ctx
    return ctx


def _uses_blocks(patch: DiTPatch) -> bool:
    return patch.uses("around_block") or patch.uses("before_blocks") or patch.uses("after_blocks")


def _bind_model(patch: DiTPatch, run, ctx, call: ModelCall, inner):
    if not patch.keeps_ledger:
        return lambda: patch.around_model(run, ctx, call, inner)

    def run_model():
        ledger = run.ledger_of(patch.name)
        ledger.model_calls += 1
        return _counted_model_call(ledger, call, lambda let_run: patch.around_model(run, ctx, call, let_run), inner,
                                   blocks_counted=_uses_blocks(patch))
    return run_model


def _bind_block(patch: DiTPatch, run, ctx, call: BlockCall, inner):
    def run_block(a: dict) -> dict:
        seen = dataclasses.replace(call, args=a)
        let_run = _counted_block(run.ledger_of(patch.name), seen, inner) if patch.keeps_ledger else inner
        return patch.around_block(run, ctx, seen, let_run)
    return run_block


# ---- the compute ledger: counted here, where the work is let through, for every ledger alike -------------------------
def _counted_block(ledger: ComputeLedger, call: BlockCall, inner):
    """`inner`, counted in `ledger` as one call of a block on `call`'s rows: one evaluation if anything runs,
    however many row sets it runs on (a probe on the cond rows, then the rest), and the rows each set has."""
    ledger.blocks_total += 1
    ledger.row_blocks_total += call.hidden.shape[0]
    key = call.stream_keys[0]
    first = [True]

    def let_run(a: dict) -> dict:
        if first:
            ledger.blocks_run += 1
            first.clear()
        ledger.row_blocks_run += a[key].shape[0]
        return inner(a)
    return let_run


def _counted_model_call(ledger: ComputeLedger, call: ModelCall, around, inner, blocks_counted: bool):
    """`around(let_run)`, one model call counted in `ledger`; `let_run` runs `inner`, the rest of the call.
    `blocks_counted`: the block hooks count its blocks; otherwise a call that runs counts all of them here. A call
    that does not run to its end (a forecast, or a probe that ended the forward early) is a skipped model call, and
    the blocks it did not reach count as skipped."""
    rows = call.x.shape[0]
    before = (ledger.blocks_total, ledger.row_blocks_total)
    completed = []

    def let_run() -> torch.Tensor:
        if not blocks_counted:
            ledger.blocks_run += call.blocks
            ledger.blocks_total += call.blocks
            ledger.row_blocks_run += call.blocks * rows
            ledger.row_blocks_total += call.blocks * rows
        out = inner()
        completed.append(True)
        return out

    out = around(let_run)
    if not completed:
        ledger.model_calls_skipped += 1
        ledger.blocks_total = max(ledger.blocks_total, before[0] + call.blocks)
        ledger.row_blocks_total = max(ledger.row_blocks_total, before[1] + call.blocks * rows)
    return out


def _bind_attention(patch: DiTPatch, run, ctx, inner):
    return lambda c: patch.around_attention(run, ctx, c, inner)


def _mark(fn, previous):
    setattr(fn, _OURS, previous)
    return fn


def _unwrap(fn):
    """If `fn` is one of ours (an earlier dit-accel node), chain onto what it chained onto, so patches run once."""
    while fn is not None and hasattr(fn, _OURS):
        fn = getattr(fn, _OURS)
    return fn
