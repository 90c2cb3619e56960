"""Sequence parallelism measured on the CPU: 2 ranks x 1 thread (gloo worker processes) against 1 process x 2 threads.

    python benchmarks/multi_gpu_cpu.py [--shape reference|wan-1.3b-width] [--reps 3] [--layout auto|cfg]

One model call (CFG batch of 2 rows, random weights, float32) timed `--reps` times after a warm-up call, median
reported, for the plain model with 2 threads (and 1 thread, what each rank has) and for Ulysses over 2 ranks with 1 thread each; plus the share of the
parallel call rank 0 spends inside all-to-alls (sending, receiving and waiting for the other rank). Both runs use the
same two cores, so this measures the overhead of splitting, not a speedup from more hardware: on 2 GPUs each rank has
its own device. Shapes: the reference model (256 wide, 8 blocks, 256 tokens) and Wan 1.3B's block width (1,536 wide,
12 heads, FFN 8,960) at 2 blocks and 1,560 tokens (480p-like 1 x 30 x 52 latent grid). `--layout cfg`: the two
rows are cond and uncond, one per rank (CFG parallelism), instead of every token split over both ranks.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.host import AccelHost
from dit_accel.accel.parallel import comm
from dit_accel.accel.parallel.pool import PoolConfig, WorkerPool
from dit_accel.accel.parallel.run import parallel_accelerated, with_sequence_parallel
from dit_accel.accel.parallel.ulysses import SequenceParallelConfig
from dit_accel.reference.wan_dit import WanConfig, WanDiT

SHAPES = {
    "reference": (WanConfig(), (32, 32)),
    "wan-1.3b-width": (WanConfig(dim=1536, ffn_dim=8960, num_layers=2), (60, 104)),
}


def _time(fn, reps: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="reference")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--mode", choices=("both", "single", "parallel"), default="both",
                        help="single / parallel: time one side only (for farm-bench's process-level A/B)")
    parser.add_argument("--layout", choices=("auto", "cfg"), default="auto",
                        help="the DiT Multi-GPU mode of the parallel side: token split (auto) or one row per rank")
    args = parser.parse_args()
    cfg, (h, w) = SHAPES[args.shape]
    torch.manual_seed(0)
    model = WanDiT(cfg).eval().requires_grad_(False)
    torch.nn.init.normal_(model.head.head.weight, std=0.02)  # Wan's init zeroes the head: outputs would all be 0
    x, t = torch.randn(2, 16, 1, h, w), torch.full((2,), 500.0)
    context = torch.randn(2, 16, cfg.text_dim)

    result = {"shape": args.shape, "layout": args.layout, "tokens": (h // 2) * (w // 2), "width": cfg.dim, "blocks": cfg.num_layers,
              "rows": 2}
    torch.set_num_threads(2)
    with torch.no_grad():
        reference = model(x, t, context, {})
        if args.mode != "parallel":
            result["single_2_threads_s"] = statistics.median(_time(lambda: model(x, t, context, {}), args.reps))
            torch.set_num_threads(1)  # the same process on one core: what each rank has
            result["single_1_thread_s"] = statistics.median(_time(lambda: model(x, t, context, {}), args.reps))
    if args.mode == "single":
        print(json.dumps(result))
        return

    torch.set_num_threads(1)
    pool = WorkerPool(PoolConfig(world_size=2, threads=1, timeout_s=600))
    try:
        host = with_sequence_parallel(AccelHost(adapter_for(model)), SequenceParallelConfig(2, args.layout))
        options = {"cond_or_uncond": [0, 1]}  # the two rows are a cond and an uncond chunk, as ComfyUI batches them
        with torch.no_grad(), parallel_accelerated(host, model, pool) as (fn, _, _):
            out = fn(x, t, context, dict(options))
            comm.wire_stats(reset=True)
            parallel = _time(lambda: fn(x, t, context, dict(options)), args.reps)
            wire = comm.wire_stats()
    finally:
        pool.shutdown()
    calls = args.reps + 1
    result.update(ranks_2x1_thread_s=statistics.median(parallel),
                  wire_share=wire["seconds"] / calls / statistics.median(parallel),
                  mb_sent_per_call=wire["bytes"] / calls / 1e6,
                  max_abs_diff=float((out - reference).abs().max()), max_abs_out=float(reference.abs().max()))
    if "single_2_threads_s" in result:
        result["ratio_single_over_parallel"] = result["single_2_threads_s"] / result["ranks_2x1_thread_s"]
        result["ratio_1_thread_over_parallel"] = result["single_1_thread_s"] / result["ranks_2x1_thread_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
