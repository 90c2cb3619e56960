"""Block-sparse attention kernel vs dense SDPA:
`python -m dit_accel.bench.attention [--tokens 4096 16384 32768 65536] [--sparsity 0.5 0.75 0.9 0.95]
[--head-dim 128] [--dtype bf16] [--json PATH]`

Random q / k / v ([batch, heads, tokens, head_dim]); per sparsity a random layout in which every query block visits
the same number of key blocks. Times our kernel and torch's SDPA with CUDA events (warm-up first, which also runs the
autotuner; the median of --iters runs), and per row prints: tokens, sparsity, ms ours, ms SDPA, speedup, ideal
1 / (1 - sparsity) (from the layout's actual density), speedup / ideal, and the full-mask ratio (our dense-layout
time / SDPA's; below 1 is faster). It also checks the full-mask output against SDPA's (max abs error).

Needs a CUDA GPU; `--smoke` instead runs a tiny size on CPU under the Triton interpreter (wall-clock timing, which
says nothing about GPU speed: it proves the script and the kernel run end to end).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
SDPA_BACKENDS = ("default", "flash", "cudnn", "efficient", "math")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dit_accel.bench.attention", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384, 32768, 65536], help="sequence lengths")
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.75, 0.9, 0.95],
                   help="fractions of key blocks skipped per query block")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=24, help="attention heads (HunyuanVideo: 24 x 128, Wan 14B: 40)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--block-q", type=int, default=128, help="layout query block (= the kernel's BLOCK_M)")
    p.add_argument("--block-k", type=int, default=128, help="layout key block (the autotuner may split it)")
    p.add_argument("--correction", action="store_true", help="also merge a (random) PISA correction term")
    p.add_argument("--sdpa-backend", choices=SDPA_BACKENDS, default="default",
                   help="pin SDPA's backend (default: torch's choice)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--json", type=Path, help="write the rows and the device here")
    p.add_argument("--smoke", action="store_true",
                   help="CPU, Triton interpreter, tiny shapes: checks that everything runs (no meaningful timing)")
    return p


def _smoke_settings(args: argparse.Namespace) -> None:
    args.tokens, args.sparsity = [64, 128], [0.5, 0.75]
    args.head_dim, args.heads, args.batch, args.dtype = 32, 1, 1, "fp32"
    args.block_q = args.block_k = 16
    args.warmup, args.iters = 1, 2


def _timer(device: str) -> Callable[[Callable[[], object], int, int], float]:
    import torch

    def time_cuda(fn, warmup, iters):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    def time_cpu(fn, warmup, iters):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    return time_cuda if device == "cuda" else time_cpu


def _sdpa(backend: str):
    import torch.nn.functional as F
    if backend == "default":
        return F.scaled_dot_product_attention
    from torch.nn.attention import SDPBackend, sdpa_kernel
    pinned = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
              "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[backend]

    def run(q, k, v):
        with sdpa_kernel(pinned):
            return F.scaled_dot_product_attention(q, k, v)
    return run


def run(args: argparse.Namespace) -> dict:
    import torch

    from ..kernels.block_sparse import (SoftmaxCorrection, block_sparse_attention, dense_layout, random_layout,
                                        resolve_backend)
    from ..kernels.block_sparse import triton_kernel

    device = "cpu" if args.smoke else "cuda"
    dtype = getattr(torch, DTYPES[args.dtype])
    backend = "triton"  # never the silent fallback: a row that cannot run the kernel raises instead
    sdpa = _sdpa(args.sdpa_backend)
    timed = _timer(device)
    rows = []
    for tokens in args.tokens:
        g = torch.Generator(device=device).manual_seed(tokens)
        shape = (args.batch, args.heads, tokens, args.head_dim)
        q, k, v = (torch.randn(shape, generator=g, device=device, dtype=dtype) for _ in range(3))
        correction = None
        if args.correction:
            lead = shape[:3]
            correction = SoftmaxCorrection(torch.randn(shape, generator=g, device=device),
                                           torch.rand(lead, generator=g, device=device),
                                           torch.randn(lead, generator=g, device=device))
        full = dense_layout(args.batch, args.heads, tokens, tokens, args.block_q, args.block_k, device)
        route, reason = resolve_backend(q, k, v, full, backend)
        if route != "triton":
            raise SystemExit(f"the kernel cannot run this configuration: {reason}")

        def attend(layout, corr=None):
            return lambda: block_sparse_attention(q, k, v, layout, corr, backend=backend)

        ms_sdpa = timed(lambda: sdpa(q, k, v), args.warmup, args.iters)
        ms_full = timed(attend(full), args.warmup, args.iters)
        full_err = (block_sparse_attention(q, k, v, full, backend=backend).float()
                    - sdpa(q, k, v).float()).abs().max().item()
        tuned = getattr(triton_kernel._KERNELS.get((triton_kernel.interpreting(), True)), "best_config", None)
        for sparsity in args.sparsity:
            layout = random_layout(args.batch, args.heads, tokens, tokens, args.block_q, args.block_k,
                                   1.0 - sparsity, seed=int(sparsity * 1000), device=device)
            density = layout.density()
            ms = timed(attend(layout, correction), args.warmup, args.iters)
            speedup, ideal = ms_sdpa / ms, 1.0 / density
            rows.append(dict(tokens=tokens, sparsity=sparsity, actual_sparsity=1.0 - density, ms_ours=ms,
                             ms_sdpa=ms_sdpa, speedup=speedup, ideal=ideal, speedup_over_ideal=speedup / ideal,
                             ms_full_mask=ms_full, full_mask_ratio=ms_full / ms_sdpa, full_mask_max_err=full_err,
                             tuned_config=str(tuned) if tuned is not None else None))
            print(_format_row(rows[-1]), flush=True)
        del q, k, v
    return dict(device=_device_name(device), dtype=args.dtype, head_dim=args.head_dim, heads=args.heads,
                batch=args.batch, block_q=args.block_q, block_k=args.block_k, correction=args.correction,
                sdpa_backend=args.sdpa_backend, smoke=args.smoke, versions=_versions(), rows=rows)


HEADER = (f"{'tokens':>7} {'sparsity':>8} {'ms ours':>9} {'ms SDPA':>9} {'speedup':>8} {'ideal':>6} "
          f"{'sp/ideal':>8} {'full/SDPA':>9} {'full err':>9}")


def _format_row(r: dict) -> str:
    return (f"{r['tokens']:>7} {r['actual_sparsity']:>8.3f} {r['ms_ours']:>9.3f} {r['ms_sdpa']:>9.3f} "
            f"{r['speedup']:>7.2f}x {r['ideal']:>5.1f}x {r['speedup_over_ideal']:>8.2f} {r['full_mask_ratio']:>9.2f} "
            f"{r['full_mask_max_err']:>9.1e}")


def _device_name(device: str) -> str:
    import platform

    import torch
    return torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or 'unknown'}), " \
                                                                  f"Triton interpreter"


def _versions() -> dict:
    import torch
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return dict(torch=torch.__version__, triton=triton_version, cuda=torch.version.cuda)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.smoke:
        # Must precede the first `import triton` (see kernels/block_sparse/triton_kernel.py).
        os.environ["TRITON_INTERPRET"] = "1"
        _smoke_settings(args)
    else:
        import torch
        if not torch.cuda.is_available():
            print("dit_accel.bench.attention needs a CUDA GPU (it times a GPU kernel against SDPA); "
                  "run with --smoke for a tiny CPU run under the Triton interpreter", file=sys.stderr)
            return 2
    bad = [s for s in args.sparsity if not 0.0 <= s < 1.0]
    if bad:
        print(f"--sparsity values must be in [0, 1), got {bad}", file=sys.stderr)
        return 2
    print(HEADER, flush=True)
    result = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
