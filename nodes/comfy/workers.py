"""ComfyUI's side of multi-GPU sampling: the worker pool of this process and the two wrappers that drive it.

  * OUTER_SAMPLE (`MULTI_GPU_KEY`): makes sure the workers run (started on the first run, reused later, restarted
    when the node's settings change or a worker died), and ends the workers' run in `finally`;
  * DIFFUSION_MODEL (`MULTI_GPU_KEY`): on a run's first model call hands the workers the loaded (patched) weights
    and the run's full configuration, then mirrors every call's inputs to them before rank 0 runs it. It is the
    outermost DIFFUSION_MODEL wrapper: under CFG parallelism it hands the inner ones (our host's, which builds the
    step context) only this rank's conditioning chunks, and gathers every chunk's output after them.
The workers hold a replica until ComfyUI drops the diffusion model (garbage collected) or exits.
"""
from __future__ import annotations

import base64
import logging
import pickle
import weakref
from dataclasses import dataclass
from pathlib import Path

import comfy.cli_args

import comfy.patcher_extension

from ...accel.host import CTX_KEY, HOST_KEY, RUN_KEY, AccelHost
from ...accel.parallel.cfg_split import call_shared
from ...accel.parallel.run import layout_for
from ...accel.parallel.pool import PoolConfig, WorkerPool, check_devices, portable_options
from ...accel.parallel.ulysses import SequenceParallelConfig, SequenceParallelPatch
from .patcher import adapter_of, add_run_wrappers, apply_patch, per_run_options

log = logging.getLogger("dit_accel")

MULTI_GPU_KEY = "dit_accel_multi_gpu"      # wrapper key, and the PoolConfig's key in transformer_options
_RUN_KEY = "dit_accel_multi_gpu_run"      # this run's worker-side progress, in the run's transformer_options
_OURS = (RUN_KEY, CTX_KEY, HOST_KEY, MULTI_GPU_KEY, _RUN_KEY)
PRELUDE = str(Path(__file__).with_name("worker_prelude.py"))
QUANT_LAYOUTS = "nodes.comfy.quant_layout:register_layouts"  # DiT Quantize's TLQ layouts, on every worker

_pool: list[WorkerPool] = []   # at most one per process: torch.distributed has one default group


@dataclass
class _WorkerRun:
    started: bool = False


def apply_multi_gpu(model, sequence: SequenceParallelConfig, pool: PoolConfig):
    """Clone `model` with sequence parallelism over `pool.world_size` ranks; 1 rank returns a plain clone."""
    if sequence.world_size <= 1:
        return model.clone()
    adapter = adapter_of(model)
    layout = layout_for(adapter, sequence)  # raises with the family's reason when it cannot
    check_devices(pool)
    settings = base64.b64encode(pickle.dumps(vars(comfy.cli_args.args))).decode()
    pool = PoolConfig(**{**pool.__dict__, "prelude": PRELUDE, "env": (("DIT_ACCEL_COMFY_ARGS", settings),),
                         "setup": (QUANT_LAYOUTS,)})
    patched = model.clone()
    add_run_wrappers(patched, MULTI_GPU_KEY, outer_sample_wrapper, diffusion_model_wrapper)
    patched = apply_patch(patched, SequenceParallelPatch(sequence, layout), first=True,
                          adapter=adapter)
    _outermost(patched, comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, MULTI_GPU_KEY)
    patched.model_options["transformer_options"][MULTI_GPU_KEY] = pool
    return patched


def _outermost(patched, wrapper_type: str, key: str) -> None:
    """Move `key`'s wrappers to the front (ComfyUI runs a type's wrappers in key order, the first outermost): the
    cfg split must happen before our host (registered by an earlier DiT node) sees the call."""
    wrappers = patched.wrappers.get(wrapper_type, {})
    if key in wrappers:
        patched.wrappers[wrapper_type] = {key: wrappers[key], **{k: v for k, v in wrappers.items() if k != key}}


def current_pool(config: PoolConfig) -> WorkerPool:
    """The process's pool for `config`: reused when alive with the same settings, else (re)started."""
    if _pool and _pool[0].alive and _pool[0].config == config:
        return _pool[0]
    shutdown()
    _pool.append(WorkerPool(config))
    return _pool[0]


def shutdown() -> None:
    while _pool:
        _pool.pop().shutdown()


def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    config = guider.model_options.get("transformer_options", {}).get(MULTI_GPU_KEY)
    if not isinstance(config, PoolConfig):
        return executor(*args, **kwargs)
    pool = current_pool(config)
    worker_run = _WorkerRun()
    try:
        with per_run_options(guider) as to:
            to[_RUN_KEY] = worker_run
            return executor(*args, **kwargs)
    finally:
        if worker_run.started and pool.alive:
            pool.end_run()


def diffusion_model_wrapper(executor, *args, **kwargs):
    slot, to = _options_slot(args, kwargs)
    worker_run = to.get(_RUN_KEY) if to is not None else None
    host = to.get(HOST_KEY) if to is not None else None
    if not isinstance(worker_run, _WorkerRun) or not isinstance(host, AccelHost) or not _pool:
        return executor(*args, **kwargs)
    pool = _pool[0]
    if not worker_run.started:
        model = executor.class_obj
        if pool.load_model(model):
            weakref.finalize(model, _release, pool, pool.model_key)
        pool.start_run(host.patches)
        worker_run.started = True
    sent_args = tuple(None if i == slot else a for i, a in enumerate(args))
    sent_kwargs = {k: v for k, v in kwargs.items() if k != slot}
    pool.call(sent_args, sent_kwargs, slot, portable_options(to, _OURS))
    return pool.collective(lambda: call_shared(args, kwargs, slot, lambda a, k: executor(*a, **k)), "in a model call")


def _options_slot(args: tuple, kwargs: dict) -> tuple[int | str | None, dict | None]:
    if isinstance(kwargs.get("transformer_options"), dict):
        return "transformer_options", kwargs["transformer_options"]
    for i, a in enumerate(args):
        if isinstance(a, dict) and (HOST_KEY in a or _RUN_KEY in a):
            return i, a
    return None, None


def _release(pool: WorkerPool, key: tuple) -> None:
    """ComfyUI dropped the model the workers hold a replica of: stop them (the next run starts fresh ones)."""
    if _pool and _pool[0] is pool and pool.procs and pool.model_key == key:
        log.info("dit-accel multi-gpu: model unloaded, stopping the workers")
        shutdown()
