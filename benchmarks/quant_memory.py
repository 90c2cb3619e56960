"""Peak host memory of quantizing one layer at the real-scale shapes (Wan 14B, Flux), data-free and GPTQ-calibrated,
against issue 25's 1 GiB budget.

Each (shape, scheme) runs in a fresh process on a layer of the real shape (N outputs x K inputs; `--rows` scales N
down). What is measured is the process's peak resident memory above what it held once torch and the 16-bit weight
existed (the model holds that weight anyway): for the GPTQ schemes that includes the Gram matrix as calibration keeps
it (K x K fp32, or K x B diagonal blocks for a layer split into Hessian blocks, `accel/quant/gptq.hessian_block`),
so the number is what calibrating and quantizing that layer add. Random bf16 weights (std 0.02) and a Gram matrix of
256 random tokens: memory does not depend on the values. `--rows-per-1024` also runs each shape at 1024 and 2048
rows and prints the difference, the row-proportional part per 1024 rows.

    python benchmarks/quant_memory.py [--schemes uniform-w4,...] [--shapes wan,flux] [--rows N] [--json F]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BUDGET = 1 << 30  # issue 25: the memory budget on a 24 GB card holding Wan 14B in fp8

SHAPES = {  # name: (out_features N, in_features K)
    "wan14b attention 5120x5120": (5120, 5120),
    "wan14b ffn.0 5120->13824": (13824, 5120),
    "wan14b ffn.2 13824->5120": (5120, 13824),
    "flux attention 3072x3072": (3072, 3072),
    "flux mlp.0 3072->12288": (12288, 3072),
    "flux mlp.2 12288->3072": (3072, 12288),
    "flux single linear2 15360->3072": (3072, 15360),
}
SCHEMES = ("uniform-w4", "uniform-w4-gptq", "w4a8-core", "w4a8-core-gptq")

CHILD = r"""
import json, resource, sys, torch
n, k, scheme = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
from dit_accel.accel.quant.config import CoreW4A8Config, WeightOnlyConfig
from dit_accel.accel.quant.gptq import hessian_block
from dit_accel.accel.quant.rotation import ChannelStats
from dit_accel.accel.quant.serialize import quantize_state_dict
torch.manual_seed(0)
w = torch.empty(n, k, dtype=torch.bfloat16)
for r in range(0, n, 64):  # no whole-layer fp32 temporary before the baseline (it would hide later peaks)
    w[r:r + 64] = torch.randn(min(64, n - r), k) * 0.02
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
gptq = scheme.endswith("gptq")
calibration, block = None, 0
if gptq:
    block = hessian_block(k)
    stats = ChannelStats(torch.zeros(k), keep_gram=True, gram_block=block)
    stats.update(torch.randn(256, k))
    calibration = {"blocks.0.ffn.0": stats}
config = (CoreW4A8Config if scheme.startswith("w4a8") else WeightOnlyConfig)(
    **({} if scheme.startswith("w4a8") else {"codebook": "uniform"}), calibration="gptq" if gptq else "none")
state = quantize_state_dict({"blocks.0.ffn.0.weight": w}, config, calibration=calibration)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
gram = 0 if not gptq else calibration["blocks.0.ffn.0"].gram_sum.numel() * 4
print(json.dumps({"added_bytes": (peak - base) * 1024, "gram_bytes": gram, "hessian_block": block}))
"""


def measure(n: int, k: int, scheme: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(k), scheme], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--shapes", default="", help="only the shapes whose name contains one of these (comma-separated)")
    p.add_argument("--rows", type=int, default=0, help="output rows per layer (0: the real N)")
    p.add_argument("--rows-per-1024", action="store_true", help="also measure at 1024 and 2048 rows")
    p.add_argument("--json")
    args = p.parse_args()
    wanted = [s for s in args.shapes.split(",") if s]
    results = []
    for shape, (n_real, k) in SHAPES.items():
        if wanted and not any(w in shape for w in wanted):
            continue
        n = args.rows or n_real
        for scheme in args.schemes.split(","):
            row = {"shape": shape, "rows": n, "in_features": k, "scheme": scheme, **measure(n, k, scheme)}
            if args.rows_per_1024:
                row["per_1024_rows_bytes"] = (measure(2048, k, scheme)["added_bytes"]
                                              - measure(1024, k, scheme)["added_bytes"])
            results.append(row)
            split = f"Hessian {k // row['hessian_block']} x {row['hessian_block']}" if row["hessian_block"] else ""
            per = (f"  {row['per_1024_rows_bytes'] / 2 ** 20:6.0f} MiB per 1024 rows"
                   if "per_1024_rows_bytes" in row else "")
            print(f"{shape:34s} N={n:<6d} {scheme:16s} adds {row['added_bytes'] / 2 ** 20:7.0f} MiB "
                  f"({row['added_bytes'] / BUDGET:4.2f} of 1 GiB; Gram {row['gram_bytes'] / 2 ** 20:4.0f} MiB) "
                  f"{split}{per}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
