"""The GPU check: Wan 1.3B at full depth (480p x 33 frames, CFG) and a flux-dev-1024-shaped model (guidance-
distilled, one row), random weights in bf16, through every caching and forecasting method at its node's defaults:
wall and compute speedup against the unpatched model on the same noise, peak device memory
(`torch.cuda.max_memory_allocated`) and the state each method held. Sized to fit 8 minutes on one H200 (20 steps).

With the compiler on (after the eager runs): the node defaults once more through `torch.compile` (TorchDynamo's
graph capture, what ComfyUI's compiler builds on; backend `--compile-backend`, "eager" by default so the capture is
checked without minutes of code generation), printing "graph breaks: N" and whether the output equals the eager one.
A method's only break should be its decision read-back: state allocated inside a captured forward is what breaks
compilers that replay it.

`python -m dit_accel.bench.shapes --gpu [--json PATH]` or `python benchmarks/gpu_check.py`; `--smoke` runs the same
code tiny on CPU (tests/bench/test_shapes.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ...accel.adapters.registry import adapter_for
from ...accel.host import AccelHost
from ...accel.standalone import accelerated
from ...reference.sampling import sample_euler_cfg, simple_schedule
from ...reference.wan_dit import WanConfig, WanDiT
from .methods import METHODS, NODE_DEFAULTS, build, timed_methods
from .standin import Flux
from .table import SHAPES, Shape


def _model(shape: Shape, smoke: bool, device: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """(model, latent shape of one sample) with random weights, built on the device in the shape's dtype."""
    width, heads, ffn = (128, 1, 256) if smoke else (shape.width, shape.heads, shape.ffn)
    dtype = torch.float32 if smoke else shape.dtype
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            if shape.family == "wan":
                model = WanDiT(WanConfig(dim=width, ffn_dim=ffn, num_layers=2 if smoke else shape.depth))
                model.patch_embedding.float()  # the patch embedding runs in fp32, as in ComfyUI
                torch.nn.init.normal_(model.head.head.weight, std=0.02)
            else:
                counts = dict(shape.blocks)
                model = Flux(width, heads, ffn, 1 if smoke else counts["double"], 1 if smoke else counts["single"])
    finally:
        torch.set_default_dtype(default)
    latent = (16, 1, 8, 8) if smoke else shape.latent
    return model.eval().requires_grad_(False), latent


def run_shape(shape: Shape, methods: list[str], steps: int, smoke: bool, device: str,
              compile_backend: str | None = "eager") -> list[dict]:
    model, latent = _model(shape, smoke, device)
    dtype = next(model.parameters()).dtype
    noise = torch.randn(1, *latent, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    context = torch.randn(1, 8 if smoke else (512 if shape.family == "wan" else shape.text_tokens), 4096,
                          generator=torch.Generator().manual_seed(1)).to(device, dtype)
    cfg = 4.0 if shape.rows == 2 else 1.0
    uncond = context * 0 if cfg != 1.0 else None
    sigmas = simple_schedule(steps)
    cuda = device.startswith("cuda")

    def sample(method: str | None, module: torch.nn.Module | None = None) -> tuple[float, dict]:
        module = model if module is None else module
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        info: dict = {}
        with torch.no_grad():
            if method is None:
                out = sample_euler_cfg(lambda x, t, c, o: module(x, t, c, o), noise, context, uncond, sigmas, cfg)
            else:
                host = AccelHost(adapter_for(model), (build(method, shape),))
                with accelerated(host, module) as (fn, run, summary):
                    if cuda:
                        run.free_memory = torch.cuda.mem_get_info()[0]  # what ComfyUI's boundary reads
                    out = sample_euler_cfg(fn, noise, context, uncond, sigmas, cfg)
                info = {"speedup_compute": run.ledger.block_speedup, "state_bytes": run.metrics.get("state_bytes"),
                        "log": summary}
        info["output"] = out
        if cuda:
            torch.cuda.synchronize()
            info["peak_bytes"] = torch.cuda.max_memory_allocated()
        return time.perf_counter() - start, info

    sample(None)  # warm-up: kernels, allocator
    results = []
    for method in methods:
        walls_full, walls = [], []
        info: dict = {}
        for _ in range(1 if smoke else 2):  # interleaved: full, method, full, method
            walls_full.append(sample(None)[0])
            wall, info = sample(method)
            walls.append(wall)
        full_peak = sample(None)[1].get("peak_bytes")
        eager_out = info.pop("output")
        if compile_backend is not None and method in NODE_DEFAULTS:
            info["compiled"] = _compiled_run(model, method, eager_out, sample, compile_backend)
        results.append({"shape": shape.name, "method": method, "steps": steps, "device": device,
                        "speedup_wall": statistics.median(walls_full) / statistics.median(walls),
                        "peak_bytes_full": full_peak, **info})
        print(f"{shape.name:24s} {method:18s} wall {results[-1]['speedup_wall']:.2f}x compute "
              f"{info['speedup_compute']:.2f}x peak {info.get('peak_bytes') or 0:,} B (full {full_peak or 0:,}) "
              f"state {info.get('state_bytes') or 0:,.0f} B", file=sys.stderr)
    return results


def _compiled_run(model: torch.nn.Module, method: str, eager_out: torch.Tensor, sample, backend: str) -> dict:
    """The method once more on `torch.compile(model)`: graph breaks (TorchDynamo's count, by reason) and whether the
    output equals the eager run's."""
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters
    dynamo.reset()
    counters.clear()
    wall, info = sample(method, torch.compile(model, backend=backend))
    breaks = dict(counters["graph_break"])
    out = info.pop("output")
    same = bool(torch.equal(out, eager_out)) if backend == "eager" else \
        bool(torch.allclose(out.float(), eager_out.float(), rtol=1e-2, atol=1e-2))
    print(f"  {method} compiled ({backend}): graph breaks: {sum(breaks.values())} "
          f"({'; '.join(f'{n} x {reason.splitlines()[0][:80]}' for reason, n in breaks.items()) or 'none'}), "
          f"output {'equals' if same else 'DIFFERS from'} eager, wall {wall:.2f} s", file=sys.stderr)
    dynamo.reset()
    return {"backend": backend, "graph_breaks": sum(breaks.values()), "break_reasons": breaks,
            "same_as_eager": same, "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny, on CPU: checks the code path only")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (20; smoke: 10)")
    p.add_argument("--methods", default="all", help="comma-separated, or all")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--compile-backend", default="eager",
                   help="torch.compile backend of the compiler-on run of the node defaults ('none' skips it)")
    args = p.parse_args(argv)
    device = "cpu" if args.smoke else "cuda"
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("the GPU check needs a CUDA device; --smoke runs it tiny on the CPU")
    methods = timed_methods(list(METHODS) if args.methods == "all" else args.methods.split(","))
    steps = args.steps or (10 if args.smoke else 20)
    results = []
    for name in ("wan-1.3b-480p-33f", "flux-dev-1024"):
        results += run_shape(SHAPES[name], methods, steps, args.smoke, device,
                             None if args.compile_backend == "none" else args.compile_backend)
    device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    text = json.dumps({"device": device_name, "torch": torch.__version__, "results": results}, indent=2,
                      default=str)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0
