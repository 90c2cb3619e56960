"""`quantize_(model, config, filter)`: replace the chosen nn.Linear layers in place, dispatching on the config type.

The default filter takes the linear layers inside the transformer blocks and leaves embeddings, norms, modulation
(adaLN / `*_mod`) and the final layer in 16 bits, as the paper and ComfyUI's own quantized checkpoints do.
Calibration (`collect_channel_stats`) is only needed by the adaptive rotation and GPTQ-calibrated weights; every
other scheme is data-free.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Callable, Iterable

import torch
from torch import nn

from ...kernels.quant import pack_codes
from .config import Float16Config, Int8Config, QuantConfig, W4A8Config, WeightOnlyConfig
from .linear import QUANTIZED_LINEARS, CodebookA8Linear, CodebookLinear, Int8Linear
from .rotation import ChannelStats, choose_rotation, rotate_weight, smoothing_factors
from .gptq import gptq_quantize, hessian_block
from .twin_log import make_codebook, quantize_weight

LayerFilter = Callable[[str, "nn.Module | None"], bool]  # (name, module); module is None when selecting by name
Progress = Callable[[int, int], None]

_KEEP_16BIT = re.compile(r"(mod|adaLN|norm|embed)", re.IGNORECASE)


def block_filter(prefixes: Iterable[str]) -> LayerFilter:
    """Linear layers inside the block lists `prefixes` (paths from the diffusion model's root, "blocks" selects
    blocks.N.*), except modulation / norm / embedding projections. Name-based: with module None (a state dict
    entry) the name decides alone. Anchored at the root, so a list of the same name elsewhere (Chroma's
    distilled_guidance_layer.layers.N, a modulation network) is not taken for Lumina's layers.N."""
    prefixes = tuple(prefixes)
    if not prefixes:
        raise ValueError("block_filter needs at least one block-list name")
    pattern = re.compile(rf"^(?:{'|'.join(map(re.escape, prefixes))})\.\d+\.")

    def keep(name: str, module: nn.Module | None = None) -> bool:
        if module is not None and not isinstance(module, nn.Linear):
            return False
        match = pattern.match(name)
        return match is not None and not _KEEP_16BIT.search(name[match.end():])
    return keep


def family_block_prefixes(diffusion_model: nn.Module | None = None) -> tuple[str, ...]:
    """The block lists of `diffusion_model`'s family (asked of its adapter); of every family when the model is
    None or of no supported family."""
    from ..adapters.registry import UnsupportedModelError, adapter_for, registered_adapters
    if diffusion_model is not None:
        try:
            return adapter_for(diffusion_model).block_prefixes
        except UnsupportedModelError:
            pass
    return tuple(sorted({p for a in registered_adapters() for p in a.block_prefixes}))


def default_filter(name: str, module: nn.Module | None = None) -> bool:
    """Block linears of any supported family (by name), except modulation / norm / embedding projections."""
    return block_filter(family_block_prefixes())(name, module)


def layer_filter_for(diffusion_model: nn.Module) -> LayerFilter:
    return block_filter(family_block_prefixes(diffusion_model))


def target_layers(model: nn.Module, layer_filter: LayerFilter | None = None) -> list[tuple[str, nn.Linear]]:
    layer_filter = layer_filter or layer_filter_for(model)
    return [(n, m) for n, m in model.named_modules() if layer_filter(n, m)]


def target_weight_names(state: dict[str, torch.Tensor], layer_filter: LayerFilter) -> list[str]:
    """Layer names (without ".weight") of the 2-D weights in a state dict that the filter selects by name."""
    return [k[:-len(".weight")] for k, v in state.items()
            if k.endswith(".weight") and v.ndim == 2 and layer_filter(k[:-len(".weight")], None)]


# --- per-scheme layer quantizers (a registry keyed by config type, not an if-chain) ---------------------------

def _weight_only(linear: nn.Linear, config: WeightOnlyConfig, stats: ChannelStats | None) -> nn.Module:
    weight = linear.weight.detach()
    if config.needs_calibration and (stats is None or (config.needs_gram and stats.gram is None)):
        raise ValueError(f"calibration={config.calibration!r} needs calibration statistics for every layer: run the "
                         "model under collect_channel_stats(model, gram=config.needs_gram) first, or set "
                         "calibration='none'")
    if config.calibration == "gptq":
        codebook = make_codebook(weight, config.bits, config.group_size, config.codebook)
        codes, scales = gptq_quantize(weight, stats.gram, codebook, config.group_size)
    else:
        codes, scales, codebook = quantize_weight(weight, config.bits, config.group_size, config.codebook,
                                                  config.clip_search)
    return CodebookLinear.from_codes(linear, codes, scales, codebook, config.bits, config.group_size)


def int8_weight(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes and fp32 scales per row (group 0) or per row and `group` columns."""
    n, k = weight.shape
    size = group or k
    wg = weight.float().view(n, k // size, size)
    scale = (wg.abs().amax(-1) / 127.0).clamp(min=1e-30)
    q = torch.round(wg / scale.unsqueeze(-1)).clamp(-128, 127).to(torch.int8)
    return q.view(n, k), scale


def _int8(linear: nn.Linear, config: Int8Config, stats: ChannelStats | None) -> nn.Module:
    weight = linear.weight.detach().float()
    kind = config.rotation if config.rotation != "adaptive" else choose_rotation(stats, config.outlier_ratio)
    smooth = None
    if kind == "outlier_aware":
        smooth = smoothing_factors(stats.absmax, weight, config.smooth_alpha)
    group = 0 if kind == "none" else config.rotation_group
    if group:
        weight = rotate_weight(weight, group, smooth)
    qweight, scale = int8_weight(weight, config.weight_group)
    bias = None if linear.bias is None else linear.bias.detach().clone()
    return Int8Linear(linear.in_features, linear.out_features, bias, qweight, scale, config.act_group, group, smooth)


def _w4a8(linear: nn.Linear, config: W4A8Config, stats: ChannelStats | None) -> nn.Module:
    weight = linear.weight.detach().float()
    kind = config.rotation if config.rotation != "adaptive" else choose_rotation(stats, config.outlier_ratio)
    smooth = smoothing_factors(stats.absmax, weight, config.smooth_alpha) if kind == "outlier_aware" else None
    group = 0 if kind == "none" else config.rotation_group
    if group:
        weight = rotate_weight(weight, group, smooth)
    codes, scales, codebook = quantize_weight(weight, config.bits, config.group_size, "twin_log", True)
    return CodebookA8Linear(linear.in_features, linear.out_features, config.bits, config.group_size,
                            None if linear.bias is None else linear.bias.detach().clone(),
                            pack_codes(codes, config.bits), scales, codebook, rotation_group=group, smooth=smooth)


LAYER_QUANTIZERS: dict[type, Callable[[nn.Linear, QuantConfig, ChannelStats | None], nn.Module]] = {
    WeightOnlyConfig: _weight_only,
    Int8Config: _int8,
    W4A8Config: _w4a8,
}


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def quantize_(model: nn.Module, config: QuantConfig, layer_filter: LayerFilter | None = None,
              calibration: dict[str, ChannelStats] | None = None, progress: Progress | None = None) -> nn.Module:
    """Quantize `model` in place and return it. Float16Config leaves it untouched (the exact setting)."""
    if isinstance(config, Float16Config):
        return model
    quantizer = LAYER_QUANTIZERS.get(type(config))
    if quantizer is None:
        raise TypeError(f"no quantizer for {type(config).__name__}; known: "
                        f"{', '.join(c.__name__ for c in LAYER_QUANTIZERS)}")
    layers = target_layers(model, layer_filter)
    for i, (name, linear) in enumerate(layers):
        device, dtype = linear.weight.device, linear.weight.dtype
        stats = (calibration or {}).get(name)
        layer_config = config.for_width(linear.in_features)
        if layer_config is None:  # a width the format cannot store: the layer stays 16-bit
            continue
        qlinear = quantizer(linear, layer_config, stats).to(device)
        if qlinear.bias is not None:
            qlinear.bias.data = qlinear.bias.data.to(dtype)
        _set_submodule(model, name, qlinear)
        if progress is not None:
            progress(i + 1, len(layers))
    return model


@contextmanager
def collect_channel_stats(model: nn.Module, layer_filter: LayerFilter | None = None, gram: bool = False):
    """Record each target layer's per-channel input statistics while the caller runs the model (calibration);
    `gram` also accumulates the input Gram matrix (K x K floats per layer, on the CPU) that GPTQ needs, or its
    diagonal blocks for a layer too wide for one Hessian (`gptq.hessian_block`)."""
    stats: dict[str, ChannelStats] = {}
    handles = []
    for name, linear in target_layers(model, layer_filter):
        block = hessian_block(linear.in_features) if gram else 0
        stats[name] = ChannelStats(torch.zeros(linear.in_features), keep_gram=gram, gram_block=block)
        handles.append(linear.register_forward_pre_hook(lambda mod, args, s=stats[name]: s.update(args[0])))
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()


def quantized_layers(model: nn.Module) -> Iterable[nn.Module]:
    return (m for m in model.modules() if isinstance(m, QUANTIZED_LINEARS))


def weight_bytes_report(model: nn.Module) -> dict:
    """Bytes of the quantized linear weights (with scales, codebooks, smoothing) against the same in 16 bits, and
    of every parameter and buffer of the model (16-bit where unquantized) for the whole-model picture."""
    layers = list(quantized_layers(model))
    dense = sum(m.dense_weight_bytes() for m in layers)
    stored = sum(m.weight_bytes() for m in layers)
    quant_ids = {id(t) for m in layers for t in (*m.buffers(), *m.parameters())}
    rest = sum(t.numel() * 2 for t in (*model.parameters(), *model.buffers())
               if id(t) not in quant_ids and t.is_floating_point())
    bias = sum(m.bias.numel() * 2 for m in layers if m.bias is not None)
    return {
        "quantized_layers": len(layers),
        "linear_weight_bytes_16bit": dense,
        "linear_weight_bytes_quantized": stored,
        "weight_bytes_ratio": dense / stored if stored else 1.0,
        "model_bytes_16bit": dense + rest + bias,
        "model_bytes_quantized": stored + rest + bias,
    }
