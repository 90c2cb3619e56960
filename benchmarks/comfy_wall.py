"""Wall time against compute through ComfyUI's own sampler: DiT Block Cache and DiT Forecast at their node defaults
on the reference model at batch 1, and what a skipped (forecast or reused) model call costs against a computed one.

    eval "$(../shared/comfyui/setup.sh)"; python benchmarks/comfy_wall.py [--seeds 5] [--steps 20] [--json out.json] \
        [--allocator steady|glibc]

Every arm samples the same seeds, interleaved (full, block cache, forecast, full, ...), so a drifting machine slows
them alike. Compute is the block rows each arm ran, counted by a block replacement installed on the base model for
every arm; wall is each sampling call's median, and the median of each seed's full / arm ratio ("paired": the arms of one seed
run back to back, so a machine that drifts between seeds cancels out); a warm-up round of every arm runs first. Per model call (ComfyUI's `model_function_wrapper`, around
everything ComfyUI does for one call): its wall time and whether any block ran, which gives a skipped call's cost as a
fraction of a computed one in the same run. glibc's heap is pinned resident first (`steady_heap.py`: otherwise its
trimming makes whichever arm the heap's history picks fault its memory back in, up to a fifth of a run).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_core_caches import count_block_rows, setup_comfy  # noqa: E402
from steady_heap import heap_setting  # noqa: E402


def node_defaults(node_cls) -> dict:
    """The node's inputs at their schema defaults (the model left out)."""
    from comfy_api.latest import io
    schema = node_cls.define_schema()
    return {i.id: i.default for i in schema.inputs
            if not isinstance(i, io.Model.Input) and getattr(i, "default", None) is not None}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds of every arm first (first-call costs)")
    p.add_argument("--json", type=Path, help="write the rows here")
    p.add_argument("--allocator", choices=("steady", "glibc"), default="steady",
                   help="steady: pin glibc's heap resident (steady_heap.py); glibc: its own trimming")
    args = p.parse_args()
    allocator = heap_setting(args.allocator)
    version = setup_comfy()
    import comfy.sd
    import nodes

    from dit_accel.nodes.block_cache_node import DiTBlockCache
    from dit_accel.nodes.forecast_node import DiTForecast
    from dit_accel.reference.assets import MODEL_FILE
    from dit_accel.reference.conditioning import UNCONDITIONAL, label_context

    base = comfy.sd.load_diffusion_model(str(MODEL_FILE))
    rows = count_block_rows(base)

    def patched(node_cls):
        out = node_cls.execute(model=base, **node_defaults(node_cls))
        return (out.args if hasattr(out, "args") else out)[0]

    arms = {"full": base, "DiT Block Cache (defaults)": patched(DiTBlockCache),
            "DiT Forecast (defaults)": patched(DiTForecast)}
    walls = {name: [] for name in arms}
    faults = {name: [] for name in arms}  # minor page faults per image (memory the allocator had given back)
    block_rows = {}
    calls = {name: [] for name in arms}  # (wall s, blocks ran?) per model call
    for round_ in range(args.warmup + args.seeds):
        seed = round_ - args.warmup  # negative: a warm-up round, sampled and dropped
        for name, model in arms.items():
            timed = model.clone()

            def wrapper(apply_model, call, record=calls[name]):
                before = rows["rows"]
                start = time.perf_counter()
                out = apply_model(call["input"], call["timestep"], **call["c"])
                record.append((time.perf_counter() - start, rows["rows"] > before))
                return out
            timed.set_model_unet_function_wrapper(wrapper)
            rows["rows"] = 0
            latent = {"samples": torch.zeros(1, 16, 1, 32, 32)}
            faulted = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            nodes.common_ksampler(timed, seed, args.steps, args.cfg, "euler", "simple",
                                  [[label_context([3]), {}]], [[label_context([UNCONDITIONAL]), {}]], latent)
            if seed < 0:
                calls[name].clear()
                continue
            walls[name].append(time.perf_counter() - start)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faulted)
            block_rows[name] = rows["rows"]
    full_wall = statistics.median(walls["full"])
    full_call = statistics.median(w for w, ran in calls["full"])
    print(f"ComfyUI {version}, reference model (256 tokens), batch 1, {args.steps} steps, CFG {args.cfg:g}, "
          f"{args.seeds} seeds interleaved; full: {full_wall:.3f} s per image, {full_call * 1e3:.2f} ms per call")
    print(allocator)
    print(f"{'arm':28s} {'compute x':>9s} {'wall x':>7s} {'wall/compute':>12s} {'paired x':>8s} {'paired/compute':>14s} "
          f"{'computed call ms':>16s} "
          f"{'skipped call ms':>15s} {'skipped/computed':>16s} {'page faults':>11s}")
    out = []
    for name in arms:
        computed = [w for w, ran in calls[name] if ran]
        skipped = [w for w, ran in calls[name] if not ran]
        compute = block_rows["full"] / max(1, block_rows[name])
        wall = full_wall / statistics.median(walls[name])
        # Each seed's arms ran back to back: their ratio cancels the machine's drift between seeds.
        paired = statistics.median(f / w for f, w in zip(walls["full"], walls[name]))
        row = {"arm": name, "speedup_compute": compute, "speedup_wall": wall, "wall_over_compute": wall / compute,
               "speedup_wall_paired": paired, "paired_over_compute": paired / compute,
               "computed_call_ms": statistics.median(computed) * 1e3 if computed else None,
               "skipped_call_ms": statistics.median(skipped) * 1e3 if skipped else None,
               "page_faults_per_image": statistics.median(faults[name])}
        row["skipped_over_computed"] = (row["skipped_call_ms"] / row["computed_call_ms"]
                                        if skipped and computed else None)
        out.append(row)
        fmt = (lambda v, f: format(v, f) if v is not None else "-")
        print(f"{name:28s} {compute:9.2f} {wall:7.2f} {wall / compute:12.2f} {paired:8.2f} {paired / compute:14.2f} "
              f"{fmt(row['computed_call_ms'], '16.2f')} "
              f"{fmt(row['skipped_call_ms'], '15.2f')} {fmt(row['skipped_over_computed'], '16.3f')} "
              f"{row['page_faults_per_image']:11.0f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"comfyui": version, "steps": args.steps, "cfg": args.cfg,
                                         "seeds": args.seeds, "allocator": args.allocator, "rows": out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
