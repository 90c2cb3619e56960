"""The "DiT Quantize" and "DiT Save Quantized Model" nodes: quantized weights inside ComfyUI's own system.

The quantize node writes the diffusion model's block linears (the block lists its family adapter names) in
ComfyUI's per-layer `comfy_quant` format and builds the model with ComfyUI's own loader (`nodes/comfy/loader.py`),
so the result is an ordinary ComfyUI model: core's quantized tensors, core's LoRA patching, offloading and dynamic
VRAM. The save node writes that model's state dict (ComfyUI's own serialisation) to safetensors with our versioned
header, and UNETLoader loads the file back.

Formats (a registry, SCHEMES):
  * uniform-w3 / uniform-w4 / uniform-w6 / uniform-w8: evenly spaced levels with per-group fp16 scales (W*A16),
    stored in the pack's codebook layout (`dit_accel_tlq{bits}`: codes, scales and the layer's level table).
    `quant_layout.py` registers that layout (once, from the pack's entry point) and lets UNETLoader read it;
    loading such a file needs the pack installed.
  * tlq-w3 / tlq-w4: LRQ-DiT's twin-log codebook in the same layout, offered only at the bit widths in TLQ_BITS,
    where it beats the uniform grid on one route (README, "Where TLQ beats the uniform grid"). Files written by the
    former tlq-w6 / tlq-w8 schemes load as before: the loader reads the levels from the file, whichever grid wrote
    them.
  * w4a8-core: ComfyUI core's own asym_w4a8_int8 format (0.33+) with the stored values chosen by our quantizer
    (`accel/quant/core_w4a8.py`); loads in plain ComfyUI.
  * w8a8-convrot: INT8 W8A8 with ConvRot (core's "int8_tensorwise", ComfyUI 0.27+); loads in plain ComfyUI. A
    ComfyUI without INT8 (0.8.0) gets one warning and core's fp8 e4m3 weights instead.
Calibration (optional inputs: a prompt and a latent): a few Euler steps through core's sampler record each block
linear's input statistics, and the schemes that calibrate then round with GPTQ error compensation (same format).
"""
from __future__ import annotations

import json
import logging
import os

from dataclasses import dataclass, replace
from typing import Callable

from comfy_api.latest import io

from ..accel.quant import Int8Config, QuantConfig, WeightOnlyConfig
from ..accel.quant.api import layer_filter_for, target_weight_names
from ..accel.quant.config import CoreW4A8Config
from ..accel.quant.serialize import HEADER_KEY, fp8_state_dict, header, quantize_state_dict
from ..kernels.logs import warn_once
from .comfy import loader, quant_layout
from .quant_calibration import calibration_passes
from .compat import ADVANCED

log = logging.getLogger("dit_accel")


@dataclass(frozen=True)
class Scheme:
    tooltip: str
    config: Callable[[int], QuantConfig]  # group size -> config
    needs_pack: bool  # True: loading the file needs dit-accel's codebook layouts
    calibrates: bool  # True: a connected calibration prompt turns on GPTQ error compensation
    core_format: str | None = None  # the QUANT_ALGOS entry ComfyUI needs to load the file without the pack


# Bit widths where the twin-log codebook beats the uniform grid on at least one route, measured per layer and at
# picture level on the reference model and a Wan-format random-init model (benchmarks/tlq_vs_uniform.py, bench rows
# lrq-w* vs gptq-w* / uniform-w*-datafree, 1 seed; README "Where TLQ beats the uniform grid"): 3 bits calibrated
# (31.7 vs 30.8 dB; tied data-free) and 4 bits data-free (30.5 vs 29.1 dB; calibrated the uniform grid is ahead,
# 37.9 vs 37.3). At 6 and 8 bits they tie per layer, so there the node writes only the uniform grid.
TLQ_BITS: tuple[int, ...] = (3, 4)
WHERE_TLQ_WINS = {3: "ahead of uniform-w3 when calibrated (31.7 vs 30.8 dB on the reference model), tied without",
                  4: "ahead of uniform-w4 without calibration (30.5 vs 29.1 dB on the reference model); with a "
                     "calibration prompt uniform-w4 is ahead (37.9 vs 37.3 dB)"}


def _weight_only(codebook: str, label: str, bits: int) -> Scheme:
    return Scheme(f"{bits}-bit {label} weights with per-group fp16 scales, 16-bit activations "
                  f"(~{16 / (bits + 0.25):.1f}x smaller linears at group 64)",
                  lambda g: WeightOnlyConfig(bits=bits, group_size=g, codebook=codebook), True, True)


SCHEMES: dict[str, Scheme] = {
    **{f"uniform-w{b}": _weight_only("uniform", "evenly spaced (uniform grid)", b) for b in (4, 3, 6, 8)},
    **{f"tlq-w{b}": _weight_only("twin_log", f"twin-log codebook (LRQ-DiT; {WHERE_TLQ_WINS[b]})", b)
       for b in TLQ_BITS},
    "w4a8-core": Scheme("ComfyUI core's own 4-bit format (asym_w4a8_int8: 4-bit codes, fp8 scales per 16 weights, "
                        "int8 activations; ~3.6x smaller linears); the file loads in plain ComfyUI 0.33+ with no "
                        "pack; our per-layer codebook and scale search choose the stored values, and with a "
                        "calibration prompt GPTQ error compensation", lambda g: CoreW4A8Config(), False, True,
                        core_format="asym_w4a8_int8"),
    "w8a8-convrot": Scheme("int8 weights and activations with a Hadamard rotation (ComfyUI core's INT8 format, "
                           "~2x smaller linears; the file loads in plain ComfyUI; fp8 weights with a warning on "
                           "ComfyUI before 0.27)", lambda g: Int8Config.convrot(), False, False),
}
DEFAULT_SCHEME = "tlq-w4"  # the best 4-bit choice without calibration, the usual route
NO_INT8_WARNING = "quant-no-int8"  # warn-once key (kernels/logs.py)
CONFIG_ATTR = "dit_accel_quant_header"  # set on the diffusion model we build; the save node writes it
NAME = "DiT Quantize"


def core_has_int8() -> bool:
    return "int8_tensorwise" in loader.core_formats()


def _bytes(state: dict) -> int:
    return sum(v.numel() * v.element_size() for v in state.values())


def _check_scheme(scheme: str) -> Scheme:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    spec = SCHEMES[scheme]
    if spec.needs_pack and not quant_layout.install():
        raise RuntimeError(f"{scheme} needs comfy-kitchen's quantized tensors and a ComfyUI 0.8-0.33 loader (see the "
                           "warning above); use w8a8-convrot")
    if spec.core_format and spec.core_format not in loader.core_formats():
        raise RuntimeError(f"{scheme} is ComfyUI core's {spec.core_format!r} format, which this ComfyUI does not "
                           f"have (it came in 0.33); update ComfyUI or use {DEFAULT_SCHEME}")
    return spec


def quantize_model(model, scheme: str = DEFAULT_SCHEME, group_size: int = 64, calibration=None):
    """A new ComfyUI model (ModelPatcher) with the block linears of `model` quantized in `scheme`'s format.

    `calibration` (per-layer statistics: a dict from `quant_calibration.calibrate`, or the pass-at-a-time
    `calibration_passes`, which collects each pass as the layers are quantized) turns on GPTQ error compensation
    for the schemes that calibrate; core's INT8 format is data-free and ignores it."""
    spec = _check_scheme(scheme)
    diffusion_model = model.get_model_object("diffusion_model")
    state = loader.patched_state_dict(model)
    if loader.is_quantized(state):
        raise ValueError(f"this model is already quantized; connect {NAME} to a 16-bit model loader")
    layer_filter = layer_filter_for(diffusion_model)
    n_layers = len(target_weight_names(state, layer_filter))
    if n_layers == 0:
        raise ValueError(f"no transformer-block linear layers found in {type(diffusion_model).__name__}")
    progress = loader.progress_bar(n_layers)
    config = spec.config(group_size)
    if calibration is not None and spec.calibrates:
        config = replace(config, calibration="gptq")
    if not isinstance(config, Int8Config) or core_has_int8():
        quantized = quantize_state_dict(state, config, layer_filter, calibration=calibration, progress=progress)
        meta = header(config)
    else:
        warn_once(NO_INT8_WARNING, f"{NAME}: this ComfyUI predates INT8 W8A8 (core added it in 0.27); using core's "
                  "fp8 e4m3 weights instead (same 8-bit size; update ComfyUI for INT8 + ConvRot)")
        quantized = fp8_state_dict(state, layer_filter, progress=progress)
        meta = {HEADER_KEY: json.dumps({"format_version": 1, "config": {"type": "CoreFp8"}})}
    layers = [k[:-len(".comfy_quant")] for k in quantized if k.endswith(".comfy_quant")]
    before = sum(state[f"{n}.weight"].numel() * 2 for n in layers)  # the same weights in 16 bits
    after = sum(v.numel() * v.element_size() for k, v in quantized.items()
                if k.rpartition(".")[0] in layers and k.rpartition(".")[2] not in ("bias", "comfy_quant"))
    # Counted before ComfyUI's loader runs: it pops every tensor it consumes out of the dict it is handed.
    whole_before, whole_after = _bytes(state), _bytes(quantized)
    new = loader.build_model(quantized, source=model)
    setattr(new.model.diffusion_model, CONFIG_ATTR, meta)
    kept = n_layers - len(layers)
    log.info("%s: %s%s, %d layers%s, linear weights %.1f MiB -> %.1f MiB (%.2fx smaller); whole model "
             "%.1f MiB -> %.1f MiB", NAME, scheme, " (GPTQ-calibrated)" if getattr(config, "needs_gram", False) else "",
             len(layers), f" ({kept} block linears kept 16-bit: their width does not fit the format)" if kept else "",
             before / 2 ** 20, after / 2 ** 20, before / max(after, 1), whole_before / 2 ** 20, whole_after / 2 ** 20)
    return new


def save_quantized(model, path: str) -> str:
    from safetensors.torch import save_file
    diffusion_model = model.get_model_object("diffusion_model")
    meta = getattr(diffusion_model, CONFIG_ATTR, None)
    if meta is None:
        raise ValueError(f"this model was not quantized by {NAME}; quantize it first, then save")
    # ComfyUI 0.8.0's state_dict hands back the quantized tensor itself; its raw storage is what the format keeps.
    state = {k: getattr(v, "_qdata", v).detach().contiguous() for k, v in diffusion_model.state_dict().items()}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_file(state, path, metadata=meta)
    return path


def group_size_input():
    return io.Int.Input("group_size", default=64, min=8, max=1024, step=8, **ADVANCED,
                        tooltip="uniform-* / tlq-* only: input channels sharing one fp16 scale. Smaller groups "
                                "are more accurate and a little larger (64: 0.25 extra bits per weight). Must divide "
                                "the layer width.")


class DiTQuantize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelQuantize",
            display_name="DiT Quantize",
            category="dit-accel",
            description="Quantizes the transformer-block linear layers of a 16-bit diffusion model into ComfyUI's own "
                        "quantized format and returns an ordinary ComfyUI model (LoRA loaders, offloading and "
                        "dynamic VRAM keep working). Embeddings, norms, modulation and the final layer stay 16-bit. "
                        "Logs weight bytes before and after. Connect it straight after the model loader.",
            inputs=[
                io.Model.Input("model", tooltip="A 16-bit diffusion model (e.g. from Load Diffusion Model)."),
                io.Combo.Input("scheme", options=list(SCHEMES), default=DEFAULT_SCHEME,
                               tooltip="; ".join(f"{k}: {v.tooltip}" for k, v in SCHEMES.items())
                               + ". uniform-* and tlq-* files load through Load Diffusion Model with dit-accel "
                               "installed; w4a8-core and w8a8-convrot files load in plain ComfyUI."),
                group_size_input(),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="Optional calibration prompt. Connect it (with a latent) to calibrate "
                                              "uniform-*, tlq-* and w4a8-core over a few sampling steps: GPTQ "
                                              "error "
                                              "compensation, markedly closer to the 16-bit model at 3-4 bits. "
                                              "Unconnected: data-free quantization."),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="Optional negative prompt for calibration (sampled with "
                                              "calibration_cfg); without it calibration runs the positive alone."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Latent for calibration, at the size you will sample (e.g. Empty Latent "
                                        "Image / Empty Hunyuan Latent Video). Needed when positive is connected."),
                io.Int.Input("calibration_steps", default=4, min=1, max=50, **ADVANCED,
                             tooltip="Euler steps of the calibration run (each layer sees every step's tokens). "
                                     "A few suffice; big models repeat them in passes to bound memory."),
                io.Float.Input("calibration_cfg", default=4.0, min=1.0, max=30.0, step=0.1, **ADVANCED,
                               tooltip="CFG of the calibration run when a negative prompt is connected: the "
                                       "activations then include the unconditional pass, as in sampling."),
            ],
            outputs=[io.Model.Output(tooltip="The quantized model.")],
        )

    @classmethod
    def execute(cls, model, scheme: str, group_size: int = 64, positive=None, negative=None, latent=None,
                calibration_steps: int = 4, calibration_cfg: float = 4.0) -> io.NodeOutput:
        stats = None
        if positive is not None or latent is not None:
            if scheme in SCHEMES and SCHEMES[scheme].calibrates:
                stats = calibration_passes(model, positive, negative, latent, calibration_steps, calibration_cfg)
            else:
                log.info("%s: %s is data-free (core's own format); calibration inputs unused", NAME, scheme)
        return io.NodeOutput(quantize_model(model, scheme, group_size, calibration=stats))


class DiTSaveQuantized(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelSaveQuantized",
            display_name="DiT Save Quantized Model",
            category="dit-accel",
            description="Saves a model from DiT Quantize as a safetensors file in ComfyUI's per-layer "
                        "quantized format with a versioned dit-accel header. Load it with Load Diffusion Model "
                        "(UNETLoader); no pack is needed for the INT8 / fp8 formats.",
            inputs=[
                io.Model.Input("model", tooltip="The output of DiT Quantize."),
                io.String.Input("filename_prefix", default="diffusion_models/dit_accel_quantized",
                                tooltip="Path under ComfyUI's output folder, without extension. ComfyUI also "
                                        "searches output/diffusion_models for diffusion models, so with the "
                                        "default prefix Load Diffusion Model lists the file after a refresh (R); "
                                        "another prefix needs the file moved to models/diffusion_models."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, filename_prefix: str) -> io.NodeOutput:
        path = save_quantized(model, loader.new_output_file(filename_prefix, ".safetensors"))
        log.info("DiT Save Quantized Model: wrote %s", path)
        return io.NodeOutput()


NODES = [DiTQuantize, DiTSaveQuantized]
