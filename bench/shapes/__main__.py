"""`python -m dit_accel.bench.shapes --shape wan-14b-480p-81f --method blockcache [--speed] [--json PATH]`

For each named shape (`table.py`, checked against ComfyUI's model detection) and method at its node's defaults:
the state it would keep at the full shape as configured and within the default memory budget of a 24 GB card
holding Wan 14B in fp8 (what the budget did to fit), beside the unpatched forward's peak activation memory; with
`--speed`, wall against compute speedup and a skipped step's cost on CPU at the shape's real width (Wan shapes:
reduced depth, 1,560 tokens, CFG). `--shape all --method all` prints the README table. `--gpu` runs the GPU check
(`benchmarks/gpu_check.py`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...accel.memory import GiB
from ..report import emit_json
from .measure import activation_peak, speed_report, state_report
from .methods import METHODS, timed_methods
from .table import SHAPES, get_shape


def _gib(n) -> str:
    return "-" if n is None else f"{n / GiB:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dit_accel.bench.shapes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="wan-14b-480p-81f", help=f"one of {', '.join(SHAPES)}, or all")
    p.add_argument("--method", default="blockcache", help=f"one or more (comma-separated) of {', '.join(METHODS)}, or all")
    p.add_argument("--speed", action="store_true", help="also time it on CPU at the shape's width (Wan shapes)")
    p.add_argument("--depth", type=int, default=2, help="--speed: blocks")
    p.add_argument("--steps", type=int, default=10, help="--speed: sampling steps")
    p.add_argument("--seeds", type=int, default=1, help="--speed: seeds (interleaved with the full model)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--gpu", action="store_true", help="run the GPU check instead (benchmarks/gpu_check.py)")
    p.add_argument("--smoke", action="store_true", help="with --gpu: tiny, on CPU")
    args = p.parse_args(argv)
    if args.gpu:
        from .gpu import main as gpu_main
        return gpu_main(["--smoke"] if args.smoke else [])
    shapes = list(SHAPES) if args.shape == "all" else [get_shape(args.shape).name]
    methods = list(METHODS) if args.method == "all" else args.method.split(",")
    results = []
    print(f"{'shape':26s} {'method':18s} {'activ GiB':>9s} {'config GiB':>10s} {'default GiB':>11s} "
          f"{'CPU GiB':>7s}  what the budget did", file=sys.stderr)
    for name in shapes:
        shape = SHAPES[name]
        peak = activation_peak(shape)
        for method in methods:
            row = {**state_report(shape, method), "activation_peak_bytes": peak}
            results.append(row)
            print(f"{name:26s} {method:18s} {_gib(peak):>9s} {_gib(row['configured_bytes']):>10s} "
                  f"{_gib(row['default_bytes']):>11s} {_gib(row['offloaded_bytes']):>7s}  "
                  f"{'; '.join(row['degraded']) or '-'}", file=sys.stderr)
        if args.speed:
            for row in speed_report(shape, timed_methods(methods), args.depth, steps=args.steps, seeds=args.seeds):
                results.append(row)
                print(f"{name:26s} {row['method']:18s} compute {row['speedup_compute']:.2f}x wall "
                      f"{row['speedup_wall']:.2f}x ({row['wall_over_compute']:.2f} of compute), skipped step "
                      f"{row['skipped_step_cost'] or float('nan'):.3f} of a computed one", file=sys.stderr)
    emit_json(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
