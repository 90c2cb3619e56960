"""Sequence-parallel sampling without ComfyUI: `accel.standalone.accelerated`, with every model call mirrored on the
workers (what the bench, the tests and the CPU measurements use; the node does the same through ComfyUI wrappers)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from ..adapters.base import SequenceLayout
from ..host import CTX_KEY, HOST_KEY, RUN_KEY, AccelHost
from ..standalone import ModelFn, accelerated
from ..state import RunState
from .cfg_split import call_shared
from .pool import WorkerPool, portable_options
from .ulysses import SequenceParallelConfig, SequenceParallelPatch

OURS = (RUN_KEY, CTX_KEY, HOST_KEY)


def with_sequence_parallel(host: AccelHost, config: SequenceParallelConfig) -> AccelHost:
    """The host with sequence parallelism outermost (it must split the tokens before any other patch sees them)."""
    return host.with_patch(SequenceParallelPatch(config, layout_for(host.adapter, config)), first=True)


def layout_for(adapter, config: SequenceParallelConfig) -> SequenceLayout:
    """The family's token layout; a family without one may still split its conditioning chunks (mode "cfg" on two
    devices: no token split, so no layout is read). Raises with the family's reason otherwise."""
    if adapter.sequence_layout is not None:
        return adapter.sequence_layout
    if config.sequence_ranks <= 1 and adapter.has_model_wrapper:
        return SequenceLayout()
    raise ValueError(f"multi-GPU does not support the {adapter.name} family"
                     + (" beyond mode 'cfg' on 2 devices" if adapter.has_model_wrapper else "")
                     + f": {adapter.sequence_parallel_refusal}")


@contextmanager
def parallel_accelerated(host: AccelHost, model: torch.nn.Module,
                         pool: WorkerPool) -> Iterator[tuple[ModelFn, RunState, list[str]]]:
    """`with parallel_accelerated(host, model, pool) as (model_fn, run, summary):` like `accelerated`, on every rank
    of `pool`. `model_fn(x, timestep, context, transformer_options)` returns the full output on rank 0."""
    pool.load_model(model)
    pool.start_run(host.patches)
    try:
        with accelerated(host, model) as (model_fn, run, summary):
            def parallel_fn(x, timestep, context, transformer_options):
                pool.call((x, timestep, context, None), {}, 3, portable_options(transformer_options, OURS))
                return pool.collective(lambda: call_shared((x, timestep, context, transformer_options), {}, 3,
                                                           lambda a, k: model_fn(*a, **k), run), "in a model call")
            yield parallel_fn, run, summary
    finally:
        pool.end_run()
