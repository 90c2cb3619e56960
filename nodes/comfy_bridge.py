"""The one place that touches ComfyUI's model patcher: attach an accel patch to a cloned MODEL.

Wrappers registered (keys are module constants so other packs and tests can find them):
  * OUTER_SAMPLE: start a fresh RunState for the sampling run, close it in `finally` (interrupts and errors too);
  * DIFFUSION_MODEL: build the StepContext for each batched model call.
Block replacements and the attention override go into the clone's own transformer_options, chained onto whatever
another node installed before us (Skip Layer Guidance, core sparse attention, ...), never replacing it.
Families whose block loop has no replacement hook (Lumina 2 / Z-Image) also get the adapter's object patches
(`add_object_patch`), which the patcher applies while the model is loaded and removes when it is unloaded.
"""
from __future__ import annotations

import comfy.model_patcher
import comfy.patcher_extension

from ..accel.adapters.registry import adapter_for
from ..accel.host import HOST_KEY, RUN_KEY, AccelHost
from ..accel.patch import DiTPatch
from .comfy.allocation import persistent_allocation
from .comfy.memory import record_free_memory

WRAPPER_KEY = "dit_accel"


def apply_patch(model, patch: DiTPatch, first: bool = False):
    """Clone `model` (a ComfyUI ModelPatcher) and add `patch` to its dit-accel host (outermost with `first`).
    Raises on unsupported models."""
    patched = model.clone()
    diffusion_model = patched.get_model_object("diffusion_model")
    adapter = adapter_for(diffusion_model)
    to = patched.model_options.setdefault("transformer_options", {})
    host = to.get(HOST_KEY)
    host = (host.with_patch(patch, first) if isinstance(host, AccelHost)
            else AccelHost(adapter, (patch,), allocation_scope=persistent_allocation))
    to[HOST_KEY] = host
    host.install(to, diffusion_model)
    for path, obj in adapter.object_patches(diffusion_model).items():  # families without a replacement hook
        patched.add_object_patch(f"diffusion_model.{path}", obj)
    wrappers = comfy.patcher_extension.WrappersMP
    if WRAPPER_KEY not in patched.wrappers.get(wrappers.OUTER_SAMPLE, {}):
        patched.add_wrapper_with_key(wrappers.OUTER_SAMPLE, WRAPPER_KEY, outer_sample_wrapper)
        patched.add_wrapper_with_key(wrappers.DIFFUSION_MODEL, WRAPPER_KEY, diffusion_model_wrapper)
    return patched


def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    original_options = guider.model_options
    host = original_options.get("transformer_options", {}).get(HOST_KEY)
    if not isinstance(host, AccelHost):
        return executor(*args, **kwargs)
    # The run's state goes into a per-run copy of the options, so the MODEL (and its other users) never holds it.
    guider.model_options = comfy.model_patcher.create_model_options_clone(original_options)
    run = host.start_run()
    guider.model_options["transformer_options"][RUN_KEY] = run
    try:
        return executor(*args, **kwargs)
    finally:
        host.end_run(run)
        guider.model_options = original_options


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
