"""ComfyUI's model loader as the nodes use it: a MODEL from a file, the 16-bit weights of a MODEL (with its patches
applied), a new MODEL built from a state dict by core's own loader, and what this ComfyUI's quantized tensors
support."""
from __future__ import annotations

import os

import torch


def load_diffusion_model(path: str | os.PathLike):
    """A ModelPatcher from a diffusion-model file, through core's loader (what UNETLoader calls)."""
    import comfy.sd
    return comfy.sd.load_diffusion_model(str(path))


def new_output_file(prefix: str, suffix: str) -> str:
    """A path under ComfyUI's output folder that no file has yet: prefix + suffix, else prefix_00001 + suffix, ..."""
    import folder_paths  # ComfyUI's own module, importable only inside a running ComfyUI
    base = os.path.join(folder_paths.get_output_directory(), prefix)
    path, i = f"{base}{suffix}", 1
    while os.path.exists(path):
        path, i = f"{base}_{i:05d}{suffix}", i + 1
    return path


def patched_state_dict(model) -> dict[str, torch.Tensor]:
    """The diffusion model's state dict as `model` (a ModelPatcher) samples it.

    The module is shared by every clone of this MODEL and may still hold another clone's patched weights (a LoRA
    sampled last): load this patcher first, with its own patches applied, as ComfyUI's own model savers do."""
    import comfy.model_management
    comfy.model_management.load_models_gpu([model], force_patch_weights=True, force_full_load=True)
    return {k: v.detach() for k, v in model.get_model_object("diffusion_model").state_dict().items()}


def is_quantized(state: dict[str, torch.Tensor]) -> bool:
    import comfy.quant_ops
    return any(k.endswith(".comfy_quant") for k in state) or any(
        isinstance(v, comfy.quant_ops.QuantizedTensor) for v in state.values())


def build_model(state: dict[str, torch.Tensor], source=None):
    """A new ModelPatcher from a diffusion-model state dict, through core's loader (what UNETLoader calls). Core
    pops the tensors it consumes out of `state`.

    Core detects the model's config from the weights alone, assuming the head widths real checkpoints have. When
    `source` (the ModelPatcher the weights came from) has a config detection would not reproduce (other head
    widths, a config no checkpoint has), the new model is built with the source's config instead: the quantized
    model is the same architecture, never a silently different one."""
    import comfy.sd
    if source is not None and not _detected_like(state, source.model.model_config):
        return _build_like(state, source)
    new = comfy.sd.load_diffusion_model_state_dict(state, model_options={})
    if new is None:
        raise ValueError("ComfyUI could not detect the model type of the quantized weights")
    return new


def _detected_like(state: dict, config) -> bool:
    """Whether core's detection gives `config` back (class and every architecture entry) for these weights."""
    import comfy.model_detection
    detected = comfy.model_detection.model_config_from_unet(state, "")
    if detected is None or type(detected) is not type(config):
        return False
    ignore = {"dtype", "operations", "device"}
    return all(detected.unet_config.get(k) == v for k, v in config.unet_config.items() if k not in ignore)


def _build_like(state: dict, source):
    """Core's loader steps (`comfy.sd.load_diffusion_model_state_dict`) with the source's config, not a detected
    one: quantized layers found the way core finds them, the source's dtype, core's manual cast for quantized
    weights."""
    import inspect

    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils
    old = source.model.model_config
    config = type(old)(dict(old.unet_config))
    config.quant_config = comfy.utils.detect_layer_quantization(state, "") or None
    load_device, offload_device = source.load_device, source.offload_device
    manual_cast = mm.unet_manual_cast(None, load_device, config.supported_inference_dtypes) \
        if config.quant_config is not None else old.manual_cast_dtype
    dtype = old.unet_config.get("dtype") or mm.unet_dtype(supported_dtypes=list(config.supported_inference_dtypes))
    if "device" in inspect.signature(config.set_inference_dtype).parameters:
        config.set_inference_dtype(dtype, manual_cast, device=load_device)
    else:
        config.set_inference_dtype(dtype, manual_cast)
    model = config.get_model(state, "")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
    model.load_model_weights(state, "")
    return patcher


def core_formats() -> set[str]:
    """The per-layer quantization formats this ComfyUI's loader reads (`comfy.quant_ops.QUANT_ALGOS`)."""
    import comfy.quant_ops
    return set(getattr(comfy.quant_ops, "QUANT_ALGOS", {}))


def progress_bar(total_hint: int):
    import comfy.utils
    bar = comfy.utils.ProgressBar(total_hint)
    return lambda done, total: bar.update_absolute(done, total)
