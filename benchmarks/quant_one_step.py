"""A cheap model-level check of data-free 4-bit formats when the full bench cannot run: the reference model's output
(one forward, CFG pair) at a few noise levels, quantized vs 16-bit, as PSNR of the velocity.

The bench (`python -m dit_accel.bench --method core-w4a8,core-w4a4,ours-w4a8,...`) samples whole images; this
compares single forwards and skips calibration (GPTQ rows are the bench's), so it runs in minutes on a busy CPU.

    python benchmarks/quant_one_step.py
"""
from __future__ import annotations

import copy
import math

import torch

from dit_accel.accel.quant import WeightOnlyConfig, quantize_, weight_bytes_report
from dit_accel.accel.quant.config import CoreW4A8Config
from dit_accel.bench.methods_quant_core import CoreLayoutLinear, _core_prepare, ours_w4a8, unavailable
from dit_accel.reference.assets import load_model
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context

SIGMAS = (0.9, 0.6, 0.3)


def _bytes_per_weight(model) -> float:
    layers = [m for m in model.modules() if isinstance(m, CoreLayoutLinear)]
    if layers:
        return sum(m.stored_bytes() for m in layers) / sum(m.weights for m in layers)
    report = weight_bytes_report(model)
    return 2 / report["weight_bytes_ratio"]


def main() -> int:
    full = load_model()
    gen = torch.Generator().manual_seed(5)
    labels = torch.arange(10)
    x0 = torch.randn(10, 16, 1, 32, 32, generator=gen)
    ctx = torch.cat([label_context(labels), label_context([UNCONDITIONAL] * 10)])
    models = {"tlq-w4 data-free": quantize_(copy.deepcopy(full), WeightOnlyConfig(bits=4)),
              "uniform-w4 data-free": quantize_(copy.deepcopy(full), WeightOnlyConfig(bits=4, codebook="uniform")),
              "tlq-w3 data-free": quantize_(copy.deepcopy(full), WeightOnlyConfig(bits=3)),
              "uniform-w3 data-free": quantize_(copy.deepcopy(full), WeightOnlyConfig(bits=3, codebook="uniform"))}
    why = unavailable()
    if why:
        print(f"core rows skipped: {why}")
    else:
        models["core-w4a8 (core's quantizer)"] = _core_prepare("AsymW4A8Int8Layout")(full)
        models["core-w4a4 (core's quantizer)"] = _core_prepare("TensorCoreConvRotW4A4Layout")(full)
        models["ours-w4a8 data-free"] = ours_w4a8(full, CoreW4A8Config())
    with torch.no_grad():
        refs = []
        for sigma in SIGMAS:
            x = torch.cat([x0, x0]) * sigma
            t = torch.full((20,), sigma)
            refs.append((x, t, full(x, t, ctx, {})))
        for name, model in models.items():
            psnr = []
            for x, t, ref in refs:
                out = model(x, t, ctx, {})
                mse = float((out - ref).square().mean())
                psnr.append(10 * math.log10(float(ref.square().mean()) / max(mse, 1e-30)))
            print(f"{name:30s} {_bytes_per_weight(model):.3f} bytes/weight   output SNR dB at sigma "
                  + " / ".join(f"{p:.1f}" for p in psnr), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
