"""Peak host memory of quantizing one layer at real-scale widths (Wan 14B, Flux), data-free and GPTQ-calibrated.

Each (shape, scheme) runs in a fresh process; the number is the process's peak resident memory above what it held
once torch, the weight and the Gram matrix existed (so it is what quantizing itself adds). The input width K is the
real one, because the Gram matrix (K x K fp32) and GPTQ's inverse factor scale with it; the output rows are scaled
down to `--rows` (the row-proportional part, a few fp32 copies of the weight, is reported per 1024 rows). Random
weights (std 0.02) and a Gram matrix of 256 random tokens: memory does not depend on the values.

    python benchmarks/quant_memory.py [--rows 256] [--schemes tlq-w4,...] [--min-width K] [--max-width K] [--json F]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SHAPES = {  # name: in_features K of the block linears (rows are scaled)
    "wan14b attention (5120)": 5120, "wan14b ffn.2 (13824)": 13824,
    "flux qkv / linear1 (3072)": 3072, "flux mlp.2 (12288)": 12288, "flux single linear2 (15360)": 15360,
}
SCHEMES = ("tlq-w4", "tlq-w4-gptq", "w4a8-core", "w4a8-core-gptq")

CHILD = r"""
import json, resource, sys, torch
k, rows, scheme = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
from dit_accel.accel.quant.config import CoreW4A8Config, WeightOnlyConfig
from dit_accel.accel.quant.rotation import ChannelStats
from dit_accel.accel.quant.serialize import quantize_state_dict
torch.manual_seed(0)
w = torch.randn(rows, k) * 0.02
x = torch.randn(256, k)
stats = ChannelStats(torch.zeros(k), keep_gram=True)
stats.update(x)
del x
gptq = scheme.endswith("gptq")
config = (CoreW4A8Config if scheme.startswith("w4a8") else WeightOnlyConfig)(calibration="gptq" if gptq else "none")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
state = quantize_state_dict({"blocks.0.ffn.0.weight": w}, config, calibration={"blocks.0.ffn.0": stats})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"added_mib": (peak - base) / 1024, "gram_mib": k * k * 4 / 2 ** 20}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--json")
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--min-width", type=int, default=0, help="only the shapes at least this wide")
    p.add_argument("--max-width", type=int, default=1 << 30, help="only the shapes at most this wide")
    args = p.parse_args()
    results = []
    for shape, k in ((s, k) for s, k in SHAPES.items() if args.min_width <= k <= args.max_width):
        for scheme in args.schemes.split(","):
            out = subprocess.run([sys.executable, "-c", CHILD, str(k), str(args.rows), scheme], check=True,
                                 capture_output=True, text=True)
            row = {"shape": shape, "in_features": k, "rows": args.rows, "scheme": scheme,
                   **json.loads(out.stdout.strip().splitlines()[-1])}
            results.append(row)
            print(f"{shape:30s} {scheme:15s} Gram {row['gram_mib']:7.0f} MiB   quantizing adds "
                  f"{row['added_mib']:7.0f} MiB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
