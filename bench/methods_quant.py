"""Bench methods of one capability (quant): each calls `register_method` from `bench/methods.py`.

Every method samples with a quantized deep copy of the reference model (`prepare_model`) and reports
`weight_bytes_ratio` (16-bit bytes of the quantized linear weights / their stored bytes with scales). The adaptive
rotation and GPTQ calibrate on their own seeds (never the bench's), 2 images per digit over an 8-step schedule.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch

from ..accel.quant import (Float16Config, Int8Config, QuantConfig, W4A8Config, WeightOnlyConfig, quantize_,
                           weight_bytes_report)
from ..accel.quant.calibration import calibrate as calibrate_in_passes
from ..reference.conditioning import UNCONDITIONAL, label_context
from ..reference.digits import NUM_CLASSES
from ..reference.sampling import sample_euler_cfg, simple_schedule
from .methods import BenchMethod, register_method

CALIBRATION_SEED = 10_000
CALIBRATION_STEPS = 8


def calibrate(model: torch.nn.Module, steps: int = CALIBRATION_STEPS, images_per_digit: int = 2,
              gram: bool = False) -> dict:
    """Per-layer channel statistics from a short sampling run on calibration-only noise (the node's calibration
    routine, `accel.quant.calibration.calibrate`, with the reference sampler as its run)."""
    device = next(model.parameters()).device
    labels = torch.arange(NUM_CLASSES).repeat(images_per_digit)
    gen = torch.Generator().manual_seed(CALIBRATION_SEED)
    noise = torch.randn(len(labels), 16, 1, 32, 32, generator=gen).to(device)
    cond = label_context(labels, device=device)
    uncond = label_context([UNCONDITIONAL] * len(labels), device=device)

    def run() -> None:
        with torch.no_grad():
            sample_euler_cfg(lambda x, t, c, o: model(x, t, c, o), noise, cond, uncond, simple_schedule(steps), 4.0)
    return calibrate_in_passes(model, run, gram=gram, name="bench calibration")


def _prepare(config: QuantConfig) -> Callable[[torch.nn.Module], torch.nn.Module]:
    def prepare(full: torch.nn.Module) -> torch.nn.Module:
        model = copy.deepcopy(full)
        stats = (calibrate(model, gram=getattr(config, "needs_gram", False))
                 if getattr(config, "needs_calibration", False) else None)
        return quantize_(model, config, calibration=stats)
    return prepare


def _report(full: torch.nn.Module, model: torch.nn.Module) -> dict:
    report = weight_bytes_report(model)
    return {"weight_bytes_ratio": report["weight_bytes_ratio"],
            "model_bytes_ratio": report["model_bytes_16bit"] / report["model_bytes_quantized"]}


def _register(name: str, description: str, config: QuantConfig) -> None:
    register_method(BenchMethod(name, description, lambda steps: [], prepare_model=_prepare(config),
                                report=_report))


_register("quant-16bit", "exact setting: no layer quantized (must equal the full model)", Float16Config())
for _bits in (4, 3, 6):
    _register(f"lrq-w{_bits}", f"LRQ-DiT twin-log weights, {_bits} bits, groups of 64 (W{_bits}A16), GPTQ-calibrated",
              WeightOnlyConfig(bits=_bits, calibration="gptq"))
    _register(f"lrq-w{_bits}-datafree", f"LRQ-DiT twin-log weights, {_bits} bits, groups of 64, no calibration "
              "(clip search + least-squares scales)", WeightOnlyConfig(bits=_bits))
for _bits in (4, 3):  # the uniform grid with everything else equal: what the twin-log codebook itself adds
    _register(f"gptq-w{_bits}", f"uniform {_bits}-bit weights, groups of 64, GPTQ-calibrated",
              WeightOnlyConfig(bits=_bits, codebook="uniform", calibration="gptq"))
    _register(f"uniform-w{_bits}-datafree", f"uniform {_bits}-bit weights, groups of 64, no calibration (clip search "
              f"+ least-squares scales, as lrq-w{_bits}-datafree)", WeightOnlyConfig(bits=_bits, codebook="uniform"))
_register("rtn-w4", "uniform round-to-nearest weights, 4 bits, groups of 64, absmax scales (baseline)",
          WeightOnlyConfig(bits=4, codebook="uniform", clip_search=False))
_register("rtn-w3", "uniform round-to-nearest weights, 3 bits, groups of 64, absmax scales (baseline)",
          WeightOnlyConfig(bits=3, codebook="uniform", clip_search=False))
_register("lrq-w8a8", "int8 weights and activations in groups of 32 with LRQ-DiT's adaptive rotation (calibrated)",
          Int8Config())
_register("int8-convrot", "ComfyUI core's W8A8: int8 per-row weights, Hadamard-256 ConvRot, per-token int8 "
          "activations", Int8Config.convrot())
_register("lrq-w4a8", "LRQ-DiT W4A8: twin-log 4-bit weights (groups of 64) and int8 activations per token and "
          "group with the adaptive rotation (calibrated; int8 activations emulated in torch)", W4A8Config())


from . import methods_quant_core  # noqa: E402,F401 - core's own 4-bit formats (need comfy-kitchen)
