"""Run a host around a plain torch model, without ComfyUI: what the bench, the demo and the tests use.

It does what the node layer's ComfyUI wrappers do, in the same order: install into transformer_options, start a run,
begin each model call, and close the run in `finally`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from .host import RUN_KEY, AccelHost
from .state import RunState

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]


@contextmanager
def accelerated(host: AccelHost, model: torch.nn.Module) -> Iterator[tuple[ModelFn, RunState, list[str]]]:
    """`with accelerated(host, model) as (model_fn, run, summary):` sample with `model_fn`; summary lines appear in
    `summary` once the block exits (also when it raises)."""
    installed: dict = {}
    host.install(installed, model)
    run = host.start_run()
    summary: list[str] = []

    blocks = len(host.adapter.block_layout(model))

    def model_fn(x, timestep, context, transformer_options):
        to = {**installed, **transformer_options, RUN_KEY: run}
        host.begin_call(to, x)
        return host.call_model(to, x, blocks, lambda: model(x, timestep, context, to))

    try:
        yield model_fn, run, summary
    finally:
        summary.extend(host.end_run(run))
