"""Our block cache and forecasters vs ComfyUI's EasyCache and LazyCache on the reference model, via ComfyUI's sampler.

    eval "$(../shared/comfyui/setup.sh)"; python benchmarks/compare_core_caches.py [--seeds 2] [--steps 20] \
        [--json out.json] [--plot docs/cache_curves.png]

Compute is counted the same way for every method: a counting block replacement installed on the base model before
any cache node counts the rows each real block call processes (EasyCache skips whole forwards, ours skips blocks or
rows). Quality is PSNR against the full-compute images and the bundled classifier's accuracy. Prints one table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

def setup_comfy():
    root = os.environ.get("COMFYUI_PATH")
    if not root:
        raise SystemExit('set COMFYUI_PATH (eval "$(../shared/comfyui/setup.sh)")')
    sys.path.insert(0, root)
    argv, sys.argv = sys.argv, [sys.argv[0]] + ([] if torch.cuda.is_available() else ["--cpu"])
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.model_management  # noqa: F401
    sys.argv = argv
    import comfyui_version
    return comfyui_version.__version__


def count_block_rows(base) -> dict:
    """Install a counting block replacement on `base` (the reference model's patcher) before any cache node clones
    it: {"rows": n} then grows by the rows each real block call processes, whatever skips the others."""
    counter = {"rows": 0}

    def counting(block_args, extra):
        counter["rows"] += block_args["img"].shape[0]
        return extra["original_block"](block_args)

    for i in range(len(base.model.diffusion_model.blocks)):
        base.set_model_patch_replace(counting, "dit", "double_block", i)
    return counter


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--json", type=Path, help="write the rows here")
    p.add_argument("--only", nargs="*", help="run only the variants whose name starts with one of these")
    p.add_argument("--plot", type=Path, help="draw PSNR against compute speedup here (needs matplotlib)")
    args = p.parse_args()
    version = setup_comfy()
    import comfy.sd
    import nodes
    from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode

    from dit_accel.accel.caching import BlockCacheConfig, BlockCachePatch, preset
    from dit_accel.accel.forecasting.methods import ForecastSettings
    from dit_accel.bench.methods_forecast import cg_interval_for, engine_reuse, interval_for
    from dit_accel.nodes.comfy.patcher import apply_patch
    from dit_accel.reference.assets import MODEL_FILE, load_classifier
    from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
    from dit_accel.reference.latent import decode

    base = comfy.sd.load_diffusion_model(str(MODEL_FILE))
    counter = count_block_rows(base)
    classifier = load_classifier()
    labels = torch.arange(10)

    def sample(model):
        counter["rows"] = 0
        images = []
        for seed in range(args.seeds):
            latent = {"samples": torch.zeros(10, 16, 1, 32, 32)}
            out = nodes.common_ksampler(model, seed, args.steps, args.cfg, "euler", "simple",
                                        [[label_context(labels), {}]], [[label_context([UNCONDITIONAL] * 10), {}]],
                                        latent, disable_noise=False)[0]["samples"]
            images.append(decode(out))
        return torch.cat(images), counter["rows"]

    def core(node, threshold):
        out = node.execute(base, reuse_threshold=threshold, start_percent=0.15, end_percent=0.95, verbose=False)
        return out.args[0] if hasattr(out, "args") else out[0]

    variants = {}
    for t in (0.02, 0.05, 0.1, 0.2, 0.3):
        variants[f"EasyCache {t}"] = lambda t=t: core(EasyCacheNode, t)
        variants[f"LazyCache {t}"] = lambda t=t: core(LazyCacheNode, t)
    for level in ("quality", "balanced", "fast"):
        variants[f"dit-accel {level}"] = lambda level=level: apply_patch(base, BlockCachePatch(preset("wan", level)))
    for c, order in ((2, 0), (3, 0), (4, 0)):
        cfg = BlockCacheConfig(gate="block", threshold=1.0, max_consecutive=c, forecast_order=order)
        variants[f"dit-accel block c{c} order {order}"] = lambda cfg=cfg: apply_patch(base, BlockCachePatch(cfg))
    # Forecasters at the same budgets whatever --steps: ~2.5x, 4x, 6x, 8x (the bench's interval rule).
    intervals = sorted({interval_for(args.steps, target) for target in (2.5, 4.0, 6.0, 8.0)})
    for interval in intervals:  # the caching engine's plain reuse of the stack's residual, on the same schedule
        variants[f"dit-accel reuse every <={interval}"] = lambda iv=interval: apply_patch(base, engine_reuse(iv))
    forecasts = [(m, interval, 0) for m in ("taylorseer", "spectrum", "spectrum-plan") for interval in intervals]
    gated = [("cg-taylor", 5, 0.1), *(("cg-taylor", cg_interval_for(args.steps, t), 1.0) for t in (4.0, 6.0))]
    for method, interval, threshold in (*forecasts, *gated):
        settings = ForecastSettings(method, interval=interval, threshold=threshold)
        name = f"dit-accel {method} " + (f"thr {threshold:g} every <={interval}" if threshold else
                                          f"every <={interval}")
        variants[name] = lambda settings=settings: apply_patch(base, settings.patch())

    if args.only:
        variants = {name: build for name, build in variants.items() if name.startswith(tuple(args.only))}
    full_images, full_rows = sample(base)
    labels_all = labels.repeat(args.seeds)
    full_acc = float((classifier.predict(full_images) == labels_all).float().mean())
    print(f"ComfyUI {version}, reference model, {args.steps} steps, CFG {args.cfg}, {len(full_images)} images; "
          f"full: class accuracy {full_acc:.3f}")
    print(f"{'method':26s} {'compute x':>9s} {'PSNR dB':>8s} {'class acc':>9s}")
    rows_out = []
    for name, build in variants.items():
        images, rows = sample(build())
        mse = ((images - full_images) ** 2).flatten(1).mean(1).clamp_min(1e-10)
        psnr = float((10 * torch.log10(1 / mse)).mean())
        acc = float((classifier.predict(images) == labels_all).float().mean())
        rows_out.append({"method": name, "speedup_compute": full_rows / rows, "psnr_db": psnr, "class_accuracy": acc})
        print(f"{name:26s} {full_rows / rows:9.2f} {psnr:8.1f} {acc:9.3f}", flush=True)
    meta = {"comfyui": version, "steps": args.steps, "cfg": args.cfg, "images": len(full_images)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**meta, "rows": rows_out}, indent=2) + "\n")
    if args.plot:
        plot_curves(rows_out, meta, args.plot)


def plot_curves(rows: list[dict], meta: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    families: dict[str, list] = {}
    for r in rows:
        name = r["method"]
        if name.startswith(("EasyCache", "LazyCache")):
            key = name.split()[0]
        elif name.startswith("dit-accel block"):
            key = "DiT Block Cache, block gate, plain reuse" if "order 0" in name else None
        elif name.split()[1] == "reuse":
            key = "DiT Block Cache, plain reuse on the forecasters' schedule"
        elif name.split()[1] in ("quality", "balanced", "fast"):
            key = "DiT Block Cache presets"
        else:
            key = f"DiT Forecast {name.split()[1]}"  # taylorseer, spectrum, spectrum-plan, cg-taylor
        if key:
            families.setdefault(key, []).append((r["speedup_compute"], min(r["psnr_db"], 60.0)))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, points in families.items():
        points = sorted(p for p in points if p[0] > 1.01)
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.set_xlabel("compute speedup (block rows executed, full / method)")
    ax.set_ylabel("PSNR vs full compute (dB)")
    ax.set_title(f"reference model, ComfyUI {meta['comfyui']}, {meta['steps']} steps, CFG {meta['cfg']:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
