"""Per-run state, kept apart per conditioning stream, so nothing leaks between prompts, batches or cond/uncond.

A `RunState` is created when sampling starts and closed when it ends (also on interrupt or error: the host closes it
in `finally`). Each patch gets its own `StreamState` objects, one per stream key; a stream's state is reset when the
shape, dtype or device of its rows change (a new resolution or batch size mid-graph, a model moved to another device).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

import torch

# A context manager factory under which tensors that outlive one model call are allocated (see `RunState.persistent`).
AllocationScope = Callable[[], ContextManager]


@dataclass(frozen=True)
class TensorSignature:
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, t: torch.Tensor) -> "TensorSignature":
        return cls(tuple(t.shape), t.dtype, t.device)


class StreamState:
    """Base class for a patch's per-stream state. Subclasses add fields and extend `reset`."""

    def reset(self) -> None:
        pass


@dataclass
class ComputeLedger:
    """What the transformer executed against what the unpatched model would have, counted by the host where the work
    happens (`accel/host.py`). The run holds one for the whole model (`RunState.ledger`) and one for each patch that
    decides what runs (`DiTPatch.keeps_ledger`, read with `RunState.ledger_of`): the blocks and model calls that
    patch saw and what it let run. Every speedup a log line states is one of its ratios."""

    blocks_run: int = 0        # block evaluations: block calls that ran the real block (on all or some rows)
    blocks_total: int = 0      # block evaluations an unpatched model would have run
    row_blocks_run: int = 0    # the same, times the batch rows they ran on (a call on part of its rows counts those)
    row_blocks_total: int = 0
    model_calls: int = 0
    model_calls_skipped: int = 0  # calls whose forward did not run to the end (a forecast stood in for it)

    @property
    def model_calls_run(self) -> int:
        return self.model_calls - self.model_calls_skipped

    @property
    def block_speedup(self) -> float:
        return _speedup(self.blocks_total, self.blocks_run)

    @property
    def row_block_speedup(self) -> float:
        return _speedup(self.row_blocks_total, self.row_blocks_run)

    @property
    def model_call_speedup(self) -> float:
        return _speedup(self.model_calls, self.model_calls_run)


def _speedup(total: int, run: int) -> float:
    return total / run if run else float("inf") if total else 1.0


@dataclass
class RunState:
    """Everything that lives for one sampling run."""

    states: dict[tuple[str, str], tuple[TensorSignature, Any]] = field(default_factory=dict)
    ledger: ComputeLedger = field(default_factory=ComputeLedger)
    # Each ledger-keeping patch's own (`ledger_of`); kept after close, like `metrics`, for benchmarks to read.
    ledgers: dict[str, ComputeLedger] = field(default_factory=dict)
    patch_data: dict[str, Any] = field(default_factory=dict)  # run-wide data of each patch (counters, ...)
    # Numbers a patch measured over the run (e.g. "attention_sparsity"), kept after close for benchmarks to read.
    metrics: dict[str, float] = field(default_factory=dict)
    # Device bytes free at the run's first model call, where the host reports it (ComfyUI does; None elsewhere):
    # what a method's automatic memory budget is derived from (accel/memory.py).
    free_memory: int | None = None
    closed: bool = False
    # Where state that outlives one model call is allocated. A captured forward (ComfyUI's model compiler, CUDA
    # graphs) must not see those allocations; the ComfyUI bridge passes a scope that pauses the capture
    # (nodes/comfy/allocation.py), plain torch allocates plainly.
    allocation_scope: AllocationScope = contextlib.nullcontext

    def persistent(self) -> ContextManager:
        """`with run.persistent():` around allocating per-run state (a tensor kept for later steps or blocks)."""
        return self.allocation_scope()

    def keep(self, tensor: torch.Tensor) -> torch.Tensor:
        """A copy of `tensor` allocated as per-run state (outside any captured forward)."""
        with self.persistent():
            return tensor.clone()

    def ledger_of(self, owner: str) -> ComputeLedger:
        """The compute ledger of one patch (`DiTPatch.keeps_ledger`), created on first use."""
        return self.ledgers.setdefault(owner, ComputeLedger())

    def data(self, owner: str, factory: Callable[[], Any]) -> Any:
        """Run-wide (not per-stream) data of one patch, created on first use."""
        if owner not in self.patch_data:
            with self.persistent():
                self.patch_data[owner] = factory()
        return self.patch_data[owner]

    def stream_state(self, owner: str, stream_key: str, like: torch.Tensor, factory: Callable[[], Any]) -> Any:
        """The state of `owner` (a patch) for one stream, reset if the stream's tensor signature changed."""
        sig = TensorSignature.of(like)
        entry = self.states.get((owner, stream_key))
        if entry is not None and entry[0] == sig:
            return entry[1]
        with self.persistent():
            if entry is None:
                state = factory()
            else:
                state = entry[1]
                if hasattr(state, "reset"):
                    state.reset()
                else:
                    state = factory()
        self.states[(owner, stream_key)] = (sig, state)
        return state

    def states_of(self, owner: str) -> list:
        """Every stream state one patch holds this run (for summaries: bytes held, counts)."""
        return [state for (who, _), (_, state) in self.states.items() if who == owner]

    def close(self) -> None:
        for _, state in self.states.values():
            if hasattr(state, "reset"):
                state.reset()
        self.states.clear()
        self.patch_data.clear()
        self.closed = True
