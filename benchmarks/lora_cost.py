"""What a LoRA costs on our quantized weights, against the same LoRA on the 16-bit model, through real ComfyUI.

    eval "$(../shared/comfyui/setup.sh)"; python benchmarks/lora_cost.py [--scheme uniform-w4] [--reps 3]

Four models sample the same prompt (the reference model, 4 images, 20 Euler steps, CFG 4): 16-bit, 16-bit + LoRA,
quantized, quantized + LoRA (core's LoraLoaderModelOnly path, `comfy.sd.load_lora_for_models`). For each it times
the first sample (which includes loading and patching the weights) and the mean of `--reps` more, all in this one
run, and prints the LoRA's cost as ratios, plus how closely quantized + LoRA follows 16-bit + LoRA.
"""
from __future__ import annotations

import argparse
import time

import torch
from compare_core_caches import setup_comfy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheme", default="uniform-w4")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    version = setup_comfy()
    import comfy.model_management
    import comfy.sd
    import nodes

    from dit_accel.nodes.quantize_node import quantize_model
    from dit_accel.reference.assets import MODEL_FILE
    from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
    from dit_accel.reference.lora import random_lora

    digits = [0, 3, 5, 8]
    positive = [[label_context(digits), {}]]
    negative = [[label_context([UNCONDITIONAL] * len(digits)), {}]]
    latent = {"samples": torch.zeros(len(digits), 16, 1, 32, 32)}

    def sample(model):
        return nodes.common_ksampler(model, 7, 20, 4.0, "euler", "simple", positive, negative, latent)[0]["samples"]

    def timed(model):
        comfy.model_management.unload_all_models()  # each model pays its own load + patch in the first sample
        start = time.perf_counter()
        out = sample(model)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.reps):
            sample(model)
        return out, first, (time.perf_counter() - start) / args.reps

    base = comfy.sd.load_diffusion_model(str(MODEL_FILE))
    quantized = quantize_model(base, args.scheme)
    lora = random_lora()  # rank 4 on every block's first FFN linear and attention output
    with_lora = lambda m: comfy.sd.load_lora_for_models(m, None, lora, 1.0, 0.0)[0]  # noqa: E731
    results = {name: timed(model) for name, model in (("16-bit", base), ("16-bit + LoRA", with_lora(base)),
                                                       (args.scheme, quantized),
                                                       (f"{args.scheme} + LoRA", with_lora(quantized)))}
    device = comfy.model_management.get_torch_device()
    print(f"ComfyUI {version}, {device}; 4 images x 20 steps; first sample includes load + weight patching")
    print(f"{'model':22s} {'first s':>8s} {'steady s':>9s}")
    for name, (_, first, steady) in results.items():
        print(f"{name:22s} {first:8.2f} {steady:9.2f}")
    (ref, _, ref_t), (ref_l, _, ref_lt) = results["16-bit"], results["16-bit + LoRA"]
    (q, _, q_t), (q_l, q_lf, q_lt) = results[args.scheme], results[f"{args.scheme} + LoRA"]
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    print(f"LoRA cost, steady sampling: 16-bit {ref_lt / ref_t:.2f}x, {args.scheme} {q_lt / q_t:.2f}x; "
          f"{args.scheme} + LoRA vs 16-bit + LoRA: {q_lt / ref_lt:.2f}x the time")
    print(f"LoRA effect {rel(ref_l, ref):.3f} (16-bit), {rel(q_l, q):.3f} ({args.scheme}); {args.scheme} + LoRA "
          f"vs 16-bit + LoRA rel. error {rel(q_l, ref_l):.4f} (quantization alone {rel(q, ref):.4f})")


if __name__ == "__main__":
    main()
