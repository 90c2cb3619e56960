"""Bench methods in ComfyUI core's own 4-bit formats, run through core's layouts (comfy-kitchen, eager backend).

  * core-w4a8: core's quantizer for "asym_w4a8_int8" (AsymW4A8Int8Layout.quantize at its defaults: ConvRot-256,
    groups of 16, fp8 group scales, its Lloyd-Max table), int8 activations per token;
  * core-w4a4: core's "convrot_w4a4" (TensorCoreConvRotW4A4Layout.quantize: int4 weights with one scale per row
    after ConvRot-256), int4 activations per token;
  * ours-w4a8 / ours-w4a8-datafree: the same asym_w4a8_int8 file written by our quantizer (DiT Quantize's
    "w4a8-core": per-layer codebook, fp8 scale search, GPTQ when calibrated), through the same core layout.
Every layer's weight is a comfy-kitchen QuantizedTensor and F.linear dispatches to the layout's own op, which is
what ComfyUI's Linear calls for these weight-only-loaded formats. Ours goes through `quantize_state_dict`, the
function DiT Quantize saves with, and the layers are rebuilt from the resulting state dict, so the bench measures
exactly the file the node writes. Bytes per weight are counted from the stored tensors (codes, scales, codebook).
Without comfy-kitchen (ComfyUI's quantized-tensor library) these rows are skipped with the reason.
"""
from __future__ import annotations

import copy
import importlib.util
import json
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..accel.quant.api import layer_filter_for, target_layers
from ..accel.quant.config import CoreW4A8Config
from ..accel.quant.serialize import quantize_state_dict
from .methods import BenchMethod, register_method
from .methods_quant import calibrate

ACTIVATIONS = {"core-w4a8": "int8 per token (ConvRot-256)", "core-w4a4": "int4 per token (ConvRot-256)",
               "ours-w4a8": "int8 per token (ConvRot-256)", "ours-w4a8-datafree": "int8 per token (ConvRot-256)"}


def unavailable() -> str | None:
    """Why core's 4-bit layouts cannot run here, or None."""
    if importlib.util.find_spec("comfy_kitchen") is None:
        return "comfy-kitchen (ComfyUI's quantized-tensor library, ComfyUI 0.33+) is not installed"
    import comfy_kitchen.tensor as ck_tensor
    missing = [n for n in ("AsymW4A8Int8Layout", "TensorCoreConvRotW4A4Layout") if not hasattr(ck_tensor, n)]
    return f"this comfy-kitchen has no {', '.join(missing)} (ComfyUI 0.33's is 0.2.31)" if missing else None


class CoreLayoutLinear(nn.Module):
    """A linear layer whose weight is a comfy-kitchen QuantizedTensor: F.linear runs core's layout op."""

    def __init__(self, qweight, bias: torch.Tensor | None):
        super().__init__()
        self.qweight = qweight
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _eager():  # the same numbers on any machine: comfy-kitchen's portable backend
            return F.linear(x, self.qweight, None if self.bias is None else self.bias.to(x.dtype))

    def stored_bytes(self) -> int:
        layout = self.qweight._layout_cls
        from comfy_kitchen.tensor.base import get_layout_class
        tensors = get_layout_class(layout).state_dict_tensors(self.qweight._qdata, self.qweight._params)
        return sum(t.numel() * t.element_size() for t in tensors.values())

    @property
    def weights(self) -> int:
        n, k = self.qweight._params.orig_shape
        return n * k


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _eager():
    from comfy_kitchen.registry import registry
    return registry.use_backend("eager")


def core_quantizer(layout: str) -> Callable[[torch.Tensor], object]:
    """Core's own quantizer of a layout at its defaults -> a QuantizedTensor."""
    def quantize(weight: torch.Tensor):
        from comfy_kitchen.tensor.base import QuantizedTensor, get_layout_class
        with _eager():
            qdata, params = get_layout_class(layout).quantize(weight.float())
        return QuantizedTensor(qdata, layout, params)
    return quantize


def _core_prepare(layout: str) -> Callable[[nn.Module], nn.Module]:
    quantize = core_quantizer(layout)

    def prepare(full: nn.Module) -> nn.Module:
        model = copy.deepcopy(full)
        for name, linear in target_layers(model):
            _set(model, name, CoreLayoutLinear(quantize(linear.weight), linear.bias))
        return model
    return prepare


def w4a8_from_state(prefix: str, state: dict[str, torch.Tensor], dtype: torch.dtype):
    """A QuantizedTensor from one layer of an asym_w4a8_int8 state dict, read the way core's loader reads it."""
    from comfy_kitchen.tensor.base import QuantizedTensor, get_layout_class
    conf = json.loads(bytes(state[f"{prefix}comfy_quant"].tolist()).decode())
    qdata = state[f"{prefix}weight"]
    params = get_layout_class("AsymW4A8Int8Layout").Params(
        scale=state[f"{prefix}weight_s_rel"], s_channel=state[f"{prefix}weight_s_channel"],
        codebook=state[f"{prefix}weight_codebook"], group_size=int(conf["group_size"]),
        convrot_groupsize=int(conf["convrot_groupsize"]), orig_dtype=dtype,
        orig_shape=(qdata.shape[0], qdata.shape[1] * 2))
    return QuantizedTensor(qdata, "AsymW4A8Int8Layout", params)


def ours_w4a8(full: nn.Module, config: CoreW4A8Config, stats: dict | None = None) -> nn.Module:
    """A copy of `full` whose block linears are what DiT Quantize's w4a8-core writes, run by core's layout."""
    model = copy.deepcopy(full)
    state = quantize_state_dict(model.state_dict(), config, layer_filter_for(model), calibration=stats)
    for name, linear in target_layers(model):
        if f"{name}.comfy_quant" in state:
            qweight = w4a8_from_state(f"{name}.", state, linear.weight.dtype)
            _set(model, name, CoreLayoutLinear(qweight, linear.bias))
    return model


def _ours_prepare(config: CoreW4A8Config) -> Callable[[nn.Module], nn.Module]:
    def prepare(full: nn.Module) -> nn.Module:
        stats = calibrate(copy.deepcopy(full), gram=True) if config.needs_calibration else None
        return ours_w4a8(full, config, stats)
    return prepare


def _report(name: str):
    def report(full: nn.Module, model: nn.Module) -> dict:
        layers = [m for m in model.modules() if isinstance(m, CoreLayoutLinear)]
        stored = sum(m.stored_bytes() for m in layers)
        weights = sum(m.weights for m in layers)
        return {"bytes_per_weight": stored / weights, "weight_bytes_ratio": 2 * weights / stored,
                "activations": ACTIVATIONS[name], "quantized_layers": len(layers)}
    return report


def _register(name: str, description: str, prepare: Callable[[nn.Module], nn.Module]) -> None:
    register_method(BenchMethod(name, description, lambda steps: [], prepare_model=prepare, report=_report(name),
                                unavailable=unavailable))


_register("core-w4a8", "ComfyUI core's asym_w4a8_int8 by core's own quantizer (ConvRot, groups of 16, fp8 scales, "
          "Lloyd-Max table), int8 activations, through core's layout (eager)", _core_prepare("AsymW4A8Int8Layout"))
_register("core-w4a4", "ComfyUI core's convrot_w4a4 by core's own quantizer (int4 per-row weights after ConvRot), "
          "int4 activations, through core's layout (eager)", _core_prepare("TensorCoreConvRotW4A4Layout"))
_register("ours-w4a8", "core's asym_w4a8_int8 file written by DiT Quantize's w4a8-core with calibration (per-layer "
          "codebook, fp8 scale search, GPTQ), through core's layout (eager)",
          _ours_prepare(CoreW4A8Config(calibration="gptq")))
_register("ours-w4a8-datafree", "core's asym_w4a8_int8 file written by DiT Quantize's w4a8-core without calibration "
          "(per-layer codebook, fp8 scale search), through core's layout (eager)", _ours_prepare(CoreW4A8Config()))
