"""GPU GEMM microbenchmark for the quant kernels: W4A16 / W3A16 codebook GEMM and W8A8 int8 GEMM vs bf16 matmul.

    python -m dit_accel.bench.gemm [--m 4096] [--widths 3072 5120] [--json out.json]

Shapes: M tokens x K = N = width (Flux: 3072, Wan-14B: 5120). Times are CUDA-event medians after warm-up (the
Triton autotuner runs during warm-up); the W8A8 time includes quantizing the activations, as in a real layer.
Refuses clearly on a machine without a CUDA GPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch


def _time_ms(fn, warmup: int = 10, reps: int = 50) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench_width(m: int, width: int, group: int) -> dict:
    from ..kernels.quant import pack_codes
    from ..kernels.quant.codebook_gemm import codebook_gemm
    from ..kernels.quant.int8_gemm import int8_gemm, quantize_rows_int8
    from ..kernels.quant.reference import quantize_int8_groups

    dev = "cuda"
    k = n = width
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
    flops = 2 * m * n * k
    row = {"m": m, "k": k, "n": n, "group": group}
    t_bf16 = _time_ms(lambda: torch.matmul(x, w.T))
    row["bf16_ms"] = t_bf16
    row["bf16_tflops"] = flops / t_bf16 / 1e9
    for bits in (4, 3):
        codes = torch.randint(0, 2 ** bits, (n, k), device=dev)
        planes = pack_codes(codes, bits)
        codebook = torch.linspace(-1, 1, 2 ** bits, device=dev)
        scales = torch.rand(n, k // group, device=dev, dtype=torch.float16) * 0.02
        t = _time_ms(lambda: codebook_gemm(x, planes, bits, codebook, scales))
        row[f"w{bits}a16_ms"] = t
        row[f"w{bits}a16_speed_vs_bf16"] = t_bf16 / t
    for label, act_group in (("w8a8_rowwise", 0), ("w8a8_group", group)):
        wq, ws = quantize_int8_groups(w.float(), act_group or k)
        size = act_group or k
        t = _time_ms(lambda: int8_gemm(*quantize_rows_int8(x, size), wq, ws, out_dtype=torch.bfloat16))
        row[f"{label}_ms"] = t
        row[f"{label}_speed_vs_bf16"] = t_bf16 / t
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=4096)
    parser.add_argument("--widths", type=int, nargs="+", default=[3072, 5120])
    parser.add_argument("--group", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench.gemm needs a CUDA GPU: the kernels it times are Triton GPU kernels (on CPU the torch "
              "reference runs instead, and timing it says nothing). Run it on a GPU machine.", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name()
    rows = [bench_width(args.m, w, args.group) for w in args.widths]
    for r in rows:
        print(f"{device} M={r['m']} K=N={r['k']}: bf16 {r['bf16_ms']:.3f} ms ({r['bf16_tflops']:.0f} TFLOP/s) | "
              f"W4A16 {r['w4a16_speed_vs_bf16']:.2f}x | W3A16 {r['w3a16_speed_vs_bf16']:.2f}x | "
              f"W8A8 row {r['w8a8_rowwise_speed_vs_bf16']:.2f}x | W8A8 g{r['group']} "
              f"{r['w8a8_group_speed_vs_bf16']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
