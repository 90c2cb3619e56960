"""Where the twin-log codebook (TLQ) beats the uniform grid: 3 and 4 bits, data-free and GPTQ-calibrated, on the
reference model and on a Wan-format model with Wan's own random init (xavier-uniform linears: a flat weight
distribution instead of the trained model's peaked, long-tailed one).

The measure is each block linear's relative output error on held-out calibration activations (the error GPTQ
minimises), over the linears of the blocks chosen (`--blocks`): the calibration run of the bench (its seeds, 2 steps)
feeds GPTQ, a second run on other noise is the held-out set. The picture-level numbers are the bench's
(`python -m dit_accel.bench --method lrq-w4,gptq-w4,...`).

    python benchmarks/tlq_vs_uniform.py [--blocks 0,3,7] [--bits 3,4] [--calibrations none,gptq] [--json out.json]
"""
from __future__ import annotations

import argparse
import json

import torch

from dit_accel.accel.quant import WeightOnlyConfig
from dit_accel.accel.quant.api import LAYER_QUANTIZERS, target_layers
from dit_accel.accel.quant.rotation import ChannelStats
from dit_accel.bench import methods_quant
from dit_accel.reference.assets import load_model
from dit_accel.reference.wan_dit import WanDiT


def _inputs(model, seed: int, blocks: set[str]) -> dict[str, torch.Tensor]:
    """Every chosen layer's input tokens over a short sampling run (on the bench's calibration noise, re-seeded)."""
    seen: dict[str, list[torch.Tensor]] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: seen.setdefault(n, []).append(
        args[0].detach().reshape(-1, args[0].shape[-1])[::7])) for n, m in target_layers(model)
        if n.split(".")[1] in blocks]
    old = methods_quant.CALIBRATION_SEED
    methods_quant.CALIBRATION_SEED = seed
    try:
        methods_quant.calibrate(model, steps=2, images_per_digit=1)
    finally:
        methods_quant.CALIBRATION_SEED = old
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


def compare(model, blocks: set[str], bits_list=(3, 4), calibrations=("none", "gptq")) -> dict[str, float]:
    calib, held_out = _inputs(model, 10_000, blocks), _inputs(model, 20_000, blocks)
    layers = {n: m for n, m in target_layers(model) if n in calib}
    results = {}
    for bits in bits_list:
        for codebook in ("twin_log", "uniform"):
            for calibration in calibrations:
                config = WeightOnlyConfig(bits=bits, codebook=codebook, calibration=calibration)
                errs = []
                for name, linear in layers.items():
                    stats = ChannelStats(torch.zeros(linear.in_features), keep_gram=True)
                    stats.update(calib[name])
                    q = LAYER_QUANTIZERS[WeightOnlyConfig](linear, config, stats)
                    x = held_out[name]
                    with torch.no_grad():
                        ref, out = linear(x), q(x)
                    errs.append(float((out - ref).norm() / ref.norm()))
                key = f"w{bits} {codebook} {'gptq' if calibration == 'gptq' else 'data-free'}"
                results[key] = sum(errs) / len(errs)
                print(f"  {key:28s} mean relative output error {results[key]:.4f}", flush=True)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", default="0,3,7")
    p.add_argument("--bits", default="3,4", help="bit widths, comma-separated (3, 4, 6, 8)")
    p.add_argument("--calibrations", default="none,gptq", help="none (data-free) and/or gptq")
    p.add_argument("--json")
    args = p.parse_args()
    blocks = set(args.blocks.split(","))
    bits, calibrations = [int(b) for b in args.bits.split(",")], args.calibrations.split(",")
    torch.manual_seed(0)
    trained = load_model()
    random_init = WanDiT(trained.cfg).eval().requires_grad_(False)
    out = {}
    for name, model in (("reference (trained)", trained), ("wan-format, random init", random_init)):
        print(name, flush=True)
        out[name] = compare(model, blocks, bits, calibrations)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
