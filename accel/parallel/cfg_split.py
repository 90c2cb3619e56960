"""CFG parallelism: a model call's conditioning chunks (cond, uncond, ...) shared out over the mesh's cfg groups.

ComfyUI batches one equal chunk of rows per entry of `transformer_options["cond_or_uncond"]`. Each cfg group runs
the model on its contiguous share of the chunks (its sequence ranks split those rows' tokens as usual); the outputs
are gathered back in chunk order, so every rank returns the whole batch. A call with fewer chunks than cfg groups (CFG
1, or cond and uncond sent in separate calls) runs whole on every group: exact, only not faster.

The split is made before the host builds the call's step context, so every patch sees the rows and streams its group
holds; the decisions that must cover every stream are agreed in `comm` (`agree_all`, `agree_verdict`).
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import Callable

import torch

from ..host import RUN_KEY
from . import comm

PER_CHUNK_OPTIONS = ("cond_or_uncond", "uuids")  # transformer_options lists with one entry per chunk
PER_ROW_OPTIONS = ("sigmas",)                     # transformer_options tensors with one entry per row


@dataclass(frozen=True)
class ChunkShare:
    """This group's share of a call: chunks `first`..`first + counts[rank]` of `rows_per_chunk` rows each."""

    counts: tuple[int, ...]   # chunks per cfg group
    rank: int                 # this rank's cfg group
    rows_per_chunk: int

    @property
    def first(self) -> int:
        return sum(self.counts[:self.rank])

    @property
    def rows(self) -> slice:
        return slice(self.first * self.rows_per_chunk, (self.first + self.counts[self.rank]) * self.rows_per_chunk)

    @property
    def row_sizes(self) -> list[int]:
        return [n * self.rows_per_chunk for n in self.counts]

    @property
    def batch(self) -> int:
        return sum(self.counts) * self.rows_per_chunk


def share_of(transformer_options: dict, batch: int) -> ChunkShare | None:
    """This rank's share of a call of `batch` rows; None when the call is not split (no cfg axis, or too few
    chunks)."""
    group = comm.cfg_group()
    if group is None or group.world <= 1 or not comm.in_run():
        return None
    chunks = len(transformer_options.get("cond_or_uncond") or ())
    if chunks < group.world or batch % chunks:
        return None
    return ChunkShare(tuple(comm.even_split(chunks, group.world)), group.rank, batch // chunks)


def call_shared(args: tuple, kwargs: dict, options_slot: int | str, forward: Callable[[tuple, dict], object],
                run=None):
    """`forward(args, kwargs)` on this cfg group's share of the call, and every group's output gathered back; the
    call as it is without a cfg axis. Counts split and whole calls in the metrics of the run (`run`, else the one in
    the call's transformer_options), for the log line."""
    if comm.cfg_group() is None or not comm.in_run():
        return forward(args, kwargs)
    options = (args[options_slot] if isinstance(options_slot, int) else kwargs.get(options_slot)) or {}
    x = args[0] if args else kwargs.get("x")
    x = x[0] if isinstance(x, (list, tuple)) else x
    share = share_of(options, x.shape[0])
    run = run if run is not None else options.get(RUN_KEY)
    if run is not None:
        key = "cfg_whole_calls" if share is None else "cfg_split_calls"
        run.metrics[key] = run.metrics.get(key, 0) + 1
    if share is None:
        return forward(args, kwargs)
    return join_output(forward(*split_call(args, kwargs, options_slot, share)), share)


def split_call(args: tuple, kwargs: dict, options_slot: int | str, share: ChunkShare) -> tuple[tuple, dict]:
    """The call's inputs for this group: every tensor with a row per batch row sliced to the group's rows (inside
    lists and dicts too), and a copy of transformer_options (at `options_slot`) with its per-row entries sliced."""
    args = tuple(_options(a, share) if i == options_slot else _rows(a, share) for i, a in enumerate(args))
    kwargs = {k: _options(v, share) if k == options_slot else _rows(v, share) for k, v in kwargs.items()}
    return args, kwargs


def join_output(out, share: ChunkShare):
    """Every group's output rows, in chunk order, on every rank (one all-gather over the cfg group)."""
    local = share.counts[share.rank] * share.rows_per_chunk
    if isinstance(out, torch.Tensor):
        if out.dim() == 0 or out.shape[0] != local:
            raise comm.ParallelError(f"CFG parallelism expected a model output with {local} rows, got "
                                     f"{tuple(out.shape)}")
        return comm.gather_along(out.contiguous(), 0, share.row_sizes, over=comm.cfg_group())
    if isinstance(out, (list, tuple)):
        return type(out)(join_output(o, share) for o in out)
    raise comm.ParallelError(f"CFG parallelism cannot gather a model output of type {type(out).__name__}")


def _rows(value, share: ChunkShare):
    if isinstance(value, torch.Tensor):
        return value[share.rows] if value.dim() and value.shape[0] == share.batch else value
    if isinstance(value, (list, tuple)):
        return type(value)(_rows(v, share) for v in value)
    if isinstance(value, dict):
        return {k: _rows(v, share) for k, v in value.items()}
    return value


def _options(options: dict | None, share: ChunkShare) -> dict | None:
    if not isinstance(options, dict):
        return options
    local = dict(options)  # a shallow copy: the sampler's own dict (and its nested patches) stay as they were
    chunks = slice(share.first, share.first + share.counts[share.rank])
    for key in PER_CHUNK_OPTIONS:
        if isinstance(local.get(key), (list, tuple)):
            local[key] = type(local[key])(local[key][chunks])
    for key in PER_ROW_OPTIONS:
        value = local.get(key)
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == share.batch:
            local[key] = value[share.rows]
    return local
