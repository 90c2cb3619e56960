"""The hook points every acceleration method plugs into, independent of the model family.

A method is a `DiTPatch` subclass overriding only the hooks it needs; the host (`accel/host.py`) calls them in a
chain, first-added outermost, through whatever extension points the family's adapter uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .context import StepContext
from .state import RunState


@dataclass
class BlockCall:
    """One call of one transformer block, as the family's replacement hook hands it over."""

    position: int          # order in the whole block loop (0 .. total-1), across block kinds
    total: int             # blocks in the loop
    kind: str              # the family's block kind (its adapter's BlockKind.kind)
    index: int             # index within its kind
    args: dict             # the family's replacement args (stream tensors under `stream_keys`, plus the rest)
    stream_keys: tuple[str, ...]  # the keys holding the token streams a block returns ("img", or "img" and "txt")
    layout_kinds: tuple[str, ...] = ()  # every block kind of the model, in loop order (its adapter's BlockKind.kind)
    # (kind, stream keys) of every block position, in loop order: what a method plans its state from (accel/memory.py)
    layout: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # What the family's adapter reads from this call's options: where the image tokens sit in a joint attention
    # sequence, and the image token grid (frames, height, width); None where the model does not say.
    image_span: tuple[int, int] | None = None
    grid_hint: tuple[int, ...] | None = None

    @property
    def hidden(self) -> torch.Tensor:
        return self.args[self.stream_keys[0]]


@dataclass
class AttentionCall:
    """One attention call, normalised to (batch, heads, tokens, head_dim) whatever the family's layout."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    kind: str                      # "self" or "cross"
    block_kind: str | None         # None outside the block loop (refiners, embedders)
    block_index: int | None
    backend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # the unpatched attention, BHLD
    # The call's attention mask (any layout ComfyUI passes), or None: a method that changes which keys a query sees
    # must honour it or leave the call alone.
    mask: torch.Tensor | None = None
    # Under Ulysses a call holds a slice of the heads: the model's head `head_offset + i` is this call's head i.
    head_offset: int = 0
    model_heads: int | None = None  # the heads of the whole attention; None: this call holds them all

    @property
    def heads(self) -> int:
        return self.q.shape[1]

    @property
    def all_heads(self) -> int:
        return self.model_heads or self.heads

    @property
    def head_dim(self) -> int:
        return self.q.shape[-1]


@dataclass
class ModelCall:
    """One call of the whole diffusion model (all conditioning streams batched), before any block runs."""

    x: torch.Tensor        # the model input (noisy latent, model space)
    blocks: int            # block evaluations the call makes when it runs (counted as skipped when it does not)


RunModel = Callable[[], torch.Tensor]
RunBlock = Callable[[dict], dict]
RunAttention = Callable[[AttentionCall], torch.Tensor]


class DiTPatch:
    """Base class for a method. `name` keys its per-stream state; hooks left alone cost nothing."""

    name: str = "patch"
    # Patches that decide the same thing (which work to skip) share a value here; a host takes one of each.
    exclusive: str | None = None
    # The patch's run-wide data (counters, what a block told the attention hook, ...): a class made with no
    # arguments on first use in each run, read with `run_data(run)`. Per-stream state goes through
    # `run.stream_state` instead.
    run_type: type | None = None
    # The host keeps this patch a compute ledger of its own (`RunState.ledger_of(name)`): the blocks and model calls
    # its hooks saw and what it let run. Patches that decide what to skip read their log line's speedup from it.
    keeps_ledger: bool = False

    def run_data(self, run: RunState):
        """This patch's `run_type` instance for this run (created on first use, dropped when the run closes)."""
        if self.run_type is None:
            raise TypeError(f"{type(self).__name__} keeps no run data: set its `run_type`")
        return run.data(self.name, self.run_type)

    def state_held(self, run: RunState) -> int:
        """Bytes this patch's state holds now on the model's device (`memory.run_state_nbytes`), recorded as the
        run's `state_bytes` metric for the bench: the figure its log line reports."""
        from .memory import run_state_nbytes  # memory plans patches: imported where used
        held = run_state_nbytes(run, self.name)
        run.metrics["state_bytes"] = float(held)
        return held

    def on_run_start(self, run: RunState) -> None:
        """Sampling starts: the run state is fresh."""

    def on_run_end(self, run: RunState) -> str | None:
        """Sampling ended (normally, interrupted or on an error): return one summary line, or None."""
        return None

    def around_model(self, run: RunState, ctx: StepContext, call: ModelCall, run_model: RunModel) -> torch.Tensor:
        """Wrap one whole model call: `run_model()` runs it (embeddings, blocks, head); a patch may instead return
        the model's output some other way (a forecast), which skips the embedders and the head too."""
        return run_model()

    def before_blocks(self, run: RunState, ctx: StepContext, call: BlockCall) -> None:
        """Called once per model call, just before the first block runs."""

    def around_block(self, run: RunState, ctx: StepContext, call: BlockCall, run_block: RunBlock) -> dict:
        """Wrap one block: call `run_block(call.args)` to compute it, or return its outputs some other way."""
        return run_block(call.args)

    def after_blocks(self, run: RunState, ctx: StepContext, call: BlockCall, out: dict) -> dict:
        """Called once per model call with the last block's outputs; may return changed outputs."""
        return out

    def around_attention(self, run: RunState, ctx: StepContext, call: AttentionCall,
                         run_attention: RunAttention) -> torch.Tensor:
        """Wrap one attention call: returns (batch, heads, q_tokens, head_dim)."""
        return run_attention(call)

    # Which hooks a subclass overrides decides what the host installs: an untouched hook installs nothing.
    @classmethod
    def uses(cls, hook: str) -> bool:
        return getattr(cls, hook) is not getattr(DiTPatch, hook)
