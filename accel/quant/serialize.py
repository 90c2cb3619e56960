"""Quantized checkpoints in ComfyUI's per-layer `comfy_quant` convention, with a versioned dit-accel header.

Per quantized layer `p` the state dict holds `p.weight`, its scales and a `p.comfy_quant` uint8 tensor with the
layer's JSON config, exactly as ComfyUI's mixed-precision loader (comfy/ops.py) expects:
  * ComfyUI core's W8A8 ConvRot (`Int8Config.convrot()`): format "int8_tensorwise" with convrot=true and
    convrot_groupsize; `p.weight` int8 (N, K) in the rotated basis, `p.weight_scale` fp32 (N, 1). Plain ComfyUI
    (0.27+) loads and runs these files with no pack installed.
  * TLQ / uniform codebooks (`WeightOnlyConfig`): format "dit_accel_tlq{bits}" with bits and group_size;
    `p.weight` = bit plane 0 (uint8), `p.weight_plane1` (3- and 6-bit), `p.weight_scale` fp16 (N, K/group),
    `p.weight_codebook` fp32 (2**bits). ComfyUI's UNETLoader reads it once the pack is installed
    (nodes/comfy/quant_layout.py registers the layouts); `load_quantized_` reads it in pure torch.
Everything else stays as it was (16-bit). The safetensors metadata carries HEADER_KEY: {"format_version", "config"};
a file whose version is newer than ours, or whose tensors do not fit the model, fails with an error naming it.
"""
from __future__ import annotations

import json

import torch
from torch import nn

from .api import LAYER_QUANTIZERS, LayerFilter, Progress, default_filter, target_weight_names
from .config import (FORMAT_VERSION, CoreW4A8Config, Int8Config, QuantConfig, WeightOnlyConfig, config_from_dict,
                     to_dict)
from .core_w4a8 import FORMAT as CORE_W4A8, quantize_core_w4a8
from .linear import CodebookA8Linear, CodebookLinear, Int8Linear
from .tlq_format import FORMATS, LEGACY_FORMAT, TLQFormat, format_name

HEADER_KEY = "dit_accel_quant"
CORE_INT8 = "int8_tensorwise"
LEGACY_CODEBOOK_FORMAT = LEGACY_FORMAT
codebook_format = format_name
CODEBOOK_FORMATS = FORMATS


def encode_layer_conf(conf: dict) -> torch.Tensor:
    return torch.tensor(list(json.dumps(conf).encode("utf-8")), dtype=torch.uint8)


def decode_layer_conf(tensor: torch.Tensor) -> dict:
    return json.loads(bytes(tensor.to(torch.uint8).tolist()).decode("utf-8"))


def header(config: QuantConfig) -> dict[str, str]:
    return {HEADER_KEY: json.dumps({"format_version": FORMAT_VERSION, "config": to_dict(config)})}


def read_header(metadata: dict | None) -> QuantConfig:
    """The config a file was written with; a clear error when the header is missing or from a newer dit-accel."""
    if not metadata or HEADER_KEY not in metadata:
        raise ValueError(f"not a dit-accel quantized file: its safetensors metadata has no '{HEADER_KEY}' header "
                         "(write it with the DiT Save Quantized node)")
    info = json.loads(metadata[HEADER_KEY])
    version = int(info.get("format_version", 0))
    if version > FORMAT_VERSION or version < 1:
        raise ValueError(f"quantized file format version {version} is not supported by this dit-accel (reads 1.."
                         f"{FORMAT_VERSION}); update dit-accel or re-save the file")
    return config_from_dict(info["config"])


def layer_state(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """The `comfy_quant` tensors of one quantized layer (bias excluded)."""
    if isinstance(module, Int8Linear):
        if module.kind != "hadamard" or module.act_group or module.weight_scale.shape[1] != 1:
            raise ValueError(f"{prefix}: only ComfyUI core's ConvRot recipe (Int8Config.convrot()) has a file format")
        conf = {"format": CORE_INT8, "convrot": True, "convrot_groupsize": module.rotation_group}
        return {f"{prefix}weight": module.qweight, f"{prefix}weight_scale": module.weight_scale,
                f"{prefix}comfy_quant": encode_layer_conf(conf)}
    if isinstance(module, CodebookA8Linear):
        raise ValueError(f"{prefix}: W4A8 (rotated weights, int8 activations) has no file format yet; save TLQ "
                         "(WeightOnlyConfig) or core's W8A8 (Int8Config.convrot())")
    if isinstance(module, CodebookLinear):
        fmt = TLQFormat(module.bits, module.group_size)
        out = {f"{prefix}{k}": v for k, v in fmt.encode(module.planes, module.scales, module.codebook).items()}
        out[f"{prefix}comfy_quant"] = encode_layer_conf(fmt.conf())
        return out
    raise TypeError(f"{prefix}: {type(module).__name__} is not a dit-accel quantized layer")


CORE_FP8 = "float8_e4m3fn"
FP8_MAX = 448.0


def fp8_layer_state(prefix: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """ComfyUI core's fp8 e4m3 format (every snapshot since 0.3.x): per-tensor scale = absmax / 448."""
    scale = (weight.float().abs().max() / FP8_MAX).clamp(min=1e-12)
    q = (weight.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return {f"{prefix}weight": q, f"{prefix}weight_scale": scale.reshape(()),
            f"{prefix}comfy_quant": encode_layer_conf({"format": CORE_FP8})}


def fp8_state_dict(state: dict[str, torch.Tensor], layer_filter: LayerFilter | None = None,
                   progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """The W8 fallback for a ComfyUI without INT8: the selected layers in core's fp8 format."""
    layer_filter = layer_filter or default_filter
    names = target_weight_names(state, layer_filter)
    out = {k: v for k, v in state.items() if k not in {f"{n}.weight" for n in names}}
    for i, name in enumerate(names):
        out.update(fp8_layer_state(f"{name}.", state[f"{name}.weight"]))
        if progress is not None:
            progress(i + 1, len(names))
    return out


def core_w4a8_layer_state(prefix: str, weight: torch.Tensor, config: CoreW4A8Config, stats) -> dict:
    """One layer in core's asym_w4a8_int8 format: the tensor names and dtypes core's loader reads (comfy/ops.py
    `_load_quantized_module`), so plain ComfyUI loads the file."""
    out = quantize_core_w4a8(weight.float(), config, None if stats is None else stats.gram)
    conf = {"format": CORE_W4A8, "group_size": out["group_size"], "convrot_groupsize": out["convrot_groupsize"]}
    return {f"{prefix}weight": out["qdata"], f"{prefix}weight_s_rel": out["s_rel"],
            f"{prefix}weight_s_channel": out["s_channel"], f"{prefix}weight_codebook": out["codebook"],
            f"{prefix}comfy_quant": encode_layer_conf(conf)}


def _module_layer_state(prefix: str, weight: torch.Tensor, config: QuantConfig, stats) -> dict:
    """Formats with a pure-torch quantized module: quantize into it, then write its tensors."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    # In its own dtype: every quantizer takes its float copies itself, a chunk at a time where it can.
    linear.weight = nn.Parameter(weight, requires_grad=False)
    return layer_state(prefix, LAYER_QUANTIZERS[type(config)](linear, config, stats))


# Config type -> (prefix, weight, config, stats) -> the layer's tensors in the file.
STATE_QUANTIZERS = {CoreW4A8Config: core_w4a8_layer_state,
                    **{kind: _module_layer_state for kind in LAYER_QUANTIZERS}}


def quantize_state_dict(state: dict[str, torch.Tensor], config: QuantConfig,
                        layer_filter: LayerFilter | None = None, calibration: dict | None = None,
                        progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """Quantize the 2-D `*.weight` entries that the filter selects (one layer at a time: peak memory is one
    layer's float copy); other tensors, and layers whose width the format cannot store (`config.for_width`), pass
    through unchanged."""
    quantizer = STATE_QUANTIZERS.get(type(config))
    if quantizer is None:
        return dict(state)
    names = target_weight_names(state, layer_filter or default_filter)
    out = dict(state)
    for i, name in enumerate(names):
        weight = state[f"{name}.weight"]
        layer_config = config.for_width(weight.shape[1])
        if layer_config is not None:
            del out[f"{name}.weight"]
            out.update(quantizer(f"{name}.", weight, layer_config, (calibration or {}).get(name)))
        if progress is not None:
            progress(i + 1, len(names))
    return out


def module_from_state(prefix: str, state: dict[str, torch.Tensor], in_features: int, out_features: int,
                      bias: torch.Tensor | None) -> nn.Module:
    """Rebuild one quantized layer from its `comfy_quant` tensors, checking every shape against the model."""
    conf = decode_layer_conf(state[f"{prefix}comfy_quant"])
    fmt = conf.get("format")
    weight = state[f"{prefix}weight"]

    def expect(key: str, shape: tuple) -> torch.Tensor:
        if key not in state:
            raise ValueError(f"quantized file is missing '{key}' for layer {prefix[:-1]}")
        if tuple(state[key].shape) != tuple(shape):
            raise ValueError(f"quantized file does not fit the model: '{key}' has shape {tuple(state[key].shape)}, "
                             f"the model's layer {prefix[:-1]} ({out_features}x{in_features}) needs {tuple(shape)}")
        return state[key]

    if fmt == CORE_INT8 and conf.get("convrot"):
        group = int(conf.get("convrot_groupsize", 256))
        expect(f"{prefix}weight", (out_features, in_features))
        scale = expect(f"{prefix}weight_scale", (out_features, 1))
        return Int8Linear(in_features, out_features, bias, weight.to(torch.int8), scale, 0, group, None)
    if TLQFormat.reads(conf):
        tlq = TLQFormat.from_conf(conf)
        tensors = {k: state.get(f"{prefix}{k}") for k in tlq.shapes(out_features, in_features)}
        planes, scales, codebook = tlq.decode(tensors, out_features, in_features, prefix[:-1])
        return CodebookLinear(in_features, out_features, tlq.bits, tlq.group, bias, planes, scales, codebook)
    raise ValueError(f"layer {prefix[:-1]}: quantization format {fmt!r} is not one dit-accel can load")


def load_quantized_(model: nn.Module, state: dict[str, torch.Tensor], metadata: dict | None) -> nn.Module:
    """Load a dit-accel quantized file into a 16-bit `model` of the same architecture (pure torch, in place)."""
    read_header(metadata)
    quantized = [k[:-len(".comfy_quant")] for k in state if k.endswith(".comfy_quant")]
    plain = {k: v for k, v in state.items() if not any(k.startswith(f"{n}.") for n in quantized)}
    for name in quantized:
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"quantized file has layer {name}, which this model does not have") from None
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"quantized file has layer {name}, which is not a linear layer in this model")
        bias = state.get(f"{name}.bias")
        if bias is not None:
            bias = bias.to(linear.weight.dtype)
        module = module_from_state(f"{name}.", state, linear.in_features, linear.out_features, bias)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, module.to(linear.weight.device))
    missing, unexpected = model.load_state_dict(plain, strict=False)
    quant_keys = {k for m in quantized for k in model.get_submodule(m).state_dict(prefix=f"{m}.")}
    missing = [k for k in missing if k not in quant_keys]
    if missing or unexpected:
        raise ValueError(f"quantized file does not fit the model: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    return model


__all__ = ["HEADER_KEY", "CODEBOOK_FORMATS", "codebook_format", "header", "fp8_state_dict", "read_header",
           "quantize_state_dict", "load_quantized_", "layer_state", "decode_layer_conf", "encode_layer_conf",
           "WeightOnlyConfig", "Int8Config"]
