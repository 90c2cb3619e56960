"""ComfyUI's model loader as the quantize nodes use it: the 16-bit weights of a MODEL (with its patches applied), a
new MODEL built from a state dict by core's own loader, and what this ComfyUI's quantized tensors support."""
from __future__ import annotations

import torch


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


def build_model(state: dict[str, torch.Tensor]):
    """A new ModelPatcher from a diffusion-model state dict, through core's loader (what UNETLoader calls). Core
    pops the tensors it consumes out of `state`."""
    import comfy.sd
    new = comfy.sd.load_diffusion_model_state_dict(state, model_options={})
    if new is None:
        raise ValueError("ComfyUI could not detect the model type of the quantized weights")
    return new


def core_formats() -> set[str]:
    """The per-layer quantization formats this ComfyUI's loader reads (`comfy.quant_ops.QUANT_ALGOS`)."""
    import comfy.quant_ops
    return set(getattr(comfy.quant_ops, "QUANT_ALGOS", {}))


def progress_bar(total_hint: int):
    import comfy.utils
    bar = comfy.utils.ProgressBar(total_hint)
    return lambda done, total: bar.update_absolute(done, total)
