"""ComfyUI's model patcher, as the nodes use it: attach an accel patch to a cloned MODEL.

Wrappers registered (keys are module constants so other packs and tests can find them):
  * OUTER_SAMPLE: start a fresh RunState for the sampling run, close it in `finally` (interrupts and errors too);
  * DIFFUSION_MODEL: build the StepContext for each batched model call.
Block replacements and the attention override go into the clone's own transformer_options, chained onto whatever
another node installed before us (Skip Layer Guidance, core sparse attention, ...), never replacing it.
Families whose block loop has no replacement hook (Lumina 2 / Z-Image) also get the adapter's object patches
(`add_object_patch`), which the patcher applies while the model is loaded and removes when it is unloaded.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import comfy.model_patcher
import comfy.patcher_extension

from ...accel.adapters.base import FamilyAdapter
from ...accel.adapters.registry import adapter_for
from ...accel.host import HOST_KEY, RUN_KEY, AccelHost
from ...accel.patch import DiTPatch
from .allocation import persistent_allocation
from .memory import record_free_memory

WRAPPER_KEY = "dit_accel"


def apply_patch(model, patch: DiTPatch, first: bool = False, adapter: FamilyAdapter | None = None):
    """Clone `model` (a ComfyUI ModelPatcher) and add `patch` to its dit-accel host (outermost with `first`).
    `adapter`: the model's family adapter where the caller already resolved it (`adapter_of`), else resolved here.
    Raises on unsupported models."""
    patched = model.clone()
    diffusion_model = patched.get_model_object("diffusion_model")
    adapter = adapter if adapter is not None else adapter_for(diffusion_model)
    to = patched.model_options.setdefault("transformer_options", {})
    host = to.get(HOST_KEY)
    host = (host.with_patch(patch, first) if isinstance(host, AccelHost)
            else AccelHost(adapter, (patch,), allocation_scope=persistent_allocation))
    to[HOST_KEY] = host
    host.install(to, diffusion_model)
    for path, obj in adapter.object_patches(diffusion_model).items():  # families without a replacement hook
        patched.add_object_patch(f"diffusion_model.{path}", obj)
    add_run_wrappers(patched, WRAPPER_KEY, outer_sample_wrapper, diffusion_model_wrapper)
    return patched


def adapter_of(model):
    """The family adapter of a MODEL (ModelPatcher); raises the registry's clear error on unknown models."""
    return adapter_for(model.get_model_object("diffusion_model"))


def add_run_wrappers(patched, key: str, outer_sample: Callable, diffusion_model: Callable) -> None:
    """Register an OUTER_SAMPLE and a DIFFUSION_MODEL wrapper under `key`, once per MODEL (a second node of the
    same kind reuses them)."""
    wrappers = comfy.patcher_extension.WrappersMP
    if key not in patched.wrappers.get(wrappers.OUTER_SAMPLE, {}):
        patched.add_wrapper_with_key(wrappers.OUTER_SAMPLE, key, outer_sample)
        patched.add_wrapper_with_key(wrappers.DIFFUSION_MODEL, key, diffusion_model)


@contextlib.contextmanager
def per_run_options(guider) -> Iterator[dict]:
    """A sampling run's own copy of the guider's model options (its transformer_options yielded), restored in
    `finally`: what a run stores there never reaches the MODEL or its other users."""
    original = guider.model_options
    guider.model_options = comfy.model_patcher.create_model_options_clone(original)
    try:
        yield guider.model_options.setdefault("transformer_options", {})
    finally:
        guider.model_options = original


def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    host = guider.model_options.get("transformer_options", {}).get(HOST_KEY)
    if not isinstance(host, AccelHost):
        return executor(*args, **kwargs)
    with per_run_options(guider) as to:
        run = host.start_run()
        to[RUN_KEY] = run
        try:
            return executor(*args, **kwargs)
        finally:
            host.end_run(run)


def diffusion_model_wrapper(executor, *args, **kwargs):
    host = None
    for candidate in (kwargs.get("transformer_options"), *args):
        if isinstance(candidate, dict) and HOST_KEY in candidate:
            host = candidate[HOST_KEY]
            break
    if not isinstance(host, AccelHost):
        return executor(*args, **kwargs)
    record_free_memory(host.adapter.transformer_options_of(args, kwargs), args[0] if args else kwargs.get("x"))
    return host.diffusion_model_wrapper(executor, *args, **kwargs)
