"""`python -m dit_accel.demo`: sample the bundled reference model with and without one method per capability.

Writes `outputs/demo_grid.png` (one row per variant, digits 0–9) and `outputs/demo_results.json`, and prints a table
of compute speedup, wall speedup, PSNR against the full output and the classifier's accuracy.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .bench.methods import METHODS
from .bench.report import format_table, save_grid
from .bench.runner import FULL, BenchSettings, compare


# One method per capability, each at its default setting (`--methods` picks others; `python -m dit_accel.bench
# --list` lists them all).
DEMO_METHODS = ("blockcache", "spectrum", "spectrum-plan", "pisa", "softpag", "lrq-w4", "lrq-w8a8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dit_accel.demo", description=__doc__)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seeds", type=int, default=2, help="seeds; each samples one image per digit")
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--methods", nargs="*", default=None, help=f"default: {' '.join(DEMO_METHODS)}")
    p.add_argument("--out", type=Path, default=Path("outputs"))
    args = p.parse_args(argv)
    methods = args.methods if args.methods is not None else [m for m in DEMO_METHODS if m in METHODS]
    settings = BenchSettings(steps=args.steps, seeds=args.seeds, cfg=args.cfg)
    print(f"dit-accel demo: reference model, {args.steps} steps, CFG {args.cfg}, {args.seeds * 10} images per "
          f"variant; methods: {', '.join(methods)}", file=sys.stderr)
    results, records = compare(methods, settings)
    grid = save_grid({name: torch.cat(records[name].images) for name in [FULL, *methods]},
                     args.out / "demo_grid.png")
    (args.out / "demo_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results, full=results[0]))
    for r in results:
        for line in r["log"]:
            print(f"  {r['method']}: {line}")
    print(f"\nimage grid: {grid}\nresults:    {args.out / 'demo_results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
