"""`python -m dit_accel.bench --model reference --method NAME [--steps N] [--seeds K] [--json PATH]`

Runs the unpatched model and the method on the same seeds, interleaved, and reports speed (compute counted from the
work executed, median wall time) and quality (PSNR/SSIM against the full output, the classifier's accuracy, and the
Fréchet distance to held-out real digits in its feature space). `--list` lists the methods.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .methods import METHODS
from .report import emit_json, format_table
from .runner import BenchSettings, compare

MODELS = ("reference",)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dit_accel.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="reference", choices=MODELS, help="the model to benchmark")
    p.add_argument("--method", help="the method(s) to compare with the full model, comma-separated: one run, the "
                                    "same seeds for all (see --list)")
    p.add_argument("--steps", type=int, default=20, help="sampling steps (Euler, simple schedule, shift 8)")
    p.add_argument("--seeds", type=int, default=8, help="seeds; each samples one image per digit")
    p.add_argument("--cfg", type=float, default=4.0, help="classifier-free guidance scale")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--list", action="store_true", help="list the methods and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-flops", action="store_true",
                   help="skip the untimed FLOP-counting pass (compute x reads '-'): for rows that cannot change the "
                        "work, such as quantized weights")
    args = p.parse_args(argv)
    if args.list:
        for name, m in sorted(METHODS.items()):
            print(f"{name:24s} {m.description}")
        return 0
    if not args.method:
        p.error("--method is required (or --list)")
    settings = BenchSettings(steps=args.steps, seeds=args.seeds, cfg=args.cfg, device=args.device,
                             count_flops=not args.no_flops)
    names = [m for m in args.method.split(",") if m]
    skipped = {}
    for name in names:
        why = METHODS[name].unavailable() if name in METHODS and METHODS[name].unavailable else None
        if why:
            skipped[name] = why
            print(f"skipped {name}: {why}", file=sys.stderr)
    results, _ = compare([m for m in names if m not in skipped], settings, progress=not args.quiet)
    if results:
        print(format_table(results, full=results[0]), file=sys.stderr)
    results += [{"method": m, "skipped": why} for m, why in skipped.items()]
    # One method: its result (the format before several could be compared in one run); several: the list.
    emit_json(results[0] if len(names) == 1 else results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
