"""Golden outputs: every method, at settings spelled out here, on the bundled reference model (pure-torch host).

Why: issue 22 restructures caching, forecasting, the adapters and the ComfyUI boundary without changing what any
method computes. These cases were recorded from the code before that refactor; `test_golden.py` asserts that each
still gives bit-identical latents (torch.equal) for the same settings and seeds.

Every knob of every config is written out (no node or preset defaults), so an issue that changes a default does not
touch these cases; a refactor that renames a config field updates the builder below, never the recorded file. A
field added later takes its default, which must keep the old behaviour (the house rule for new knobs).

The shape is small so the whole file stays under 2 MB and a run takes seconds: 2 digits (3 and 7), CFG 4, 12 Euler
steps on the Wan simple schedule, 16 x 24 latents (8 x 12 image tokens: 6 key blocks of 16, tiles of 4 x 4, so the
static patterns have whole tiles). Quantization takes the linear layers of two blocks
(2 and 5): the data-free scale search over the whole model would take minutes on a CPU.

Regenerate (refuses to overwrite an existing file unless asked; only after a change that is meant to alter outputs,
in its own commit that says why):

    python tests/golden/golden_cases.py --overwrite            # every case
    python tests/golden/golden_cases.py --overwrite --only NAME  # one case, the others kept
"""
from __future__ import annotations

import argparse
import copy
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.caching.block_cache import BlockCacheConfig, BlockCachePatch
from dit_accel.accel.forecasting.confidence_gate import ConfidenceGatedForecastPatch
from dit_accel.accel.forecasting.output_forecast import OutputForecastConfig, OutputForecastPatch
from dit_accel.accel.caching.predictors import ForecastConfig
from dit_accel.accel.guidance.reference_objective import softpag_post_cfg
from dit_accel.accel.guidance.softpag import SoftPAGConfig, SoftPAGPatch
from dit_accel.accel.host import AccelHost
from dit_accel.accel.patch import DiTPatch
from dit_accel.accel.quant import Int8Config, WeightOnlyConfig, collect_channel_stats, quantize_
from dit_accel.accel.sparse import SparseAttentionConfig, SparseAttentionPatch
from dit_accel.accel.sparse.policies.cluster import ClusterParams
from dit_accel.accel.sparse.policies.draft import DraftParams
from dit_accel.accel.sparse.policies.grat import GratParams
from dit_accel.accel.sparse.policies.pisa import PisaParams
from dit_accel.accel.sparse.policies.sol import SolParams
from dit_accel.accel.sparse.policies.window import WindowParams
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.assets import load_model
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule

GOLDEN_FILE = Path(__file__).resolve().parent / "golden_outputs.safetensors"
LABELS = (3, 7)
STEPS = 12
CFG = 4.0
LATENT = (16, 1, 16, 24)
QUANT_BLOCKS = ("blocks.2.", "blocks.5.")
NOISE_SEED = 0
CALIBRATION_SEED = 1   # quantization calibrates on its own noise, never on the judged one
CALIBRATION_STEPS = 4


@dataclass(frozen=True)
class Case:
    """One method at fixed settings: the patches to install, and optionally a model transform or a post-CFG step."""

    patches: Callable[[], tuple[DiTPatch, ...]] = tuple
    prepare_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None
    post_cfg: Callable[[], Callable[[dict], torch.Tensor]] | None = None


def _noise(seed: int) -> torch.Tensor:
    return torch.randn(len(LABELS), *LATENT, generator=torch.Generator().manual_seed(seed))


def sample(model: torch.nn.Module, case: Case, seed: int = NOISE_SEED, steps: int = STEPS) -> torch.Tensor:
    """The case's latents: the standalone host around `model`, Euler + CFG on the simple schedule."""
    cond = label_context(list(LABELS))
    uncond = label_context([UNCONDITIONAL] * len(LABELS))
    post_cfg = case.post_cfg() if case.post_cfg is not None else None
    host = AccelHost(adapter_for(model), case.patches())
    with accelerated(host, model) as (model_fn, _run, _summary):
        return sample_euler_cfg(model_fn, _noise(seed), cond, uncond, simple_schedule(steps), CFG,
                                post_cfg=post_cfg)


# --- block cache: every gate, the three block-gate speeds, both granularities, both time axes --------------------

def _block_cache(**fields) -> Case:
    config = BlockCacheConfig(**fields)
    return Case(lambda: (BlockCachePatch(config, name="blockcache"),))


def _cache_fields(gate: str, threshold: float, max_consecutive: int, forecast_order: int = 0,
                  forecast: ForecastConfig | None = None, granularity: str = "stack", interval: int = 2,
                  forecast_time: str = "step", final_steps: int = 1) -> dict:
    return dict(threshold=threshold, gate=gate, granularity=granularity, gate_blocks=1, interval=interval,
                start_percent=0.0, end_percent=1.0, warmup_steps=1, final_steps=final_steps,
                max_consecutive=max_consecutive, forecast_order=forecast_order, forecast=forecast,
                forecast_time=forecast_time)


def _forecast(method: str, order: int, degree: int = 2, ridge: float = 0.1, window: int = 6,
              blend: float = 0.5) -> ForecastConfig:
    return ForecastConfig(method=method, order=order, degree=degree, ridge=ridge, window=window, blend=blend)


TAYLOR1 = _forecast("taylor", order=1)
SPECTRAL_TAYLOR = _forecast("spectral_taylor", order=1, degree=4, ridge=0.03, window=6, blend=0.85)

CASES: dict[str, Case] = {
    "none": Case(),
    "blockcache-first-block": _block_cache(**_cache_fields("first_block", 0.3, 2)),
    "blockcache-first-block-per-block-sigma": _block_cache(**_cache_fields(
        "first_block", 0.3, 2, forecast_order=1, granularity="block", forecast_time="sigma")),
    "blockcache-cg": _block_cache(**_cache_fields("cg", 0.5, 2, forecast=TAYLOR1)),
    "blockcache-static": _block_cache(**_cache_fields("static", 0.1, 2, interval=2)),
    "blockcache-block-quality": _block_cache(**_cache_fields("block", 1.0, 2, forecast_order=2)),
    "blockcache-block-balanced": _block_cache(**_cache_fields("block", 1.0, 3, forecast_order=2)),
    "blockcache-block-fast": _block_cache(**_cache_fields("block", 1.0, 4, forecast_order=2)),
}


# --- forecasting: the four methods on the model output, and the stack / block granularities ---------------------

def _output_forecast(forecast: ForecastConfig, gate: str, final_steps: int, threshold: float = 0.1,
                     label: str = "forecast") -> Case:
    config = OutputForecastConfig(forecast=forecast, interval=3, gate=gate, weight_power=0.5, threshold=threshold,
                                  free_final_budget=5, start_percent=0.0, end_percent=1.0, warmup_steps=1,
                                  final_steps=final_steps, min_steps=10)
    patch_type = ConfidenceGatedForecastPatch if gate == "confidence" else OutputForecastPatch
    return Case(lambda: (patch_type(config, label=label),))


CASES.update({
    "forecast-taylorseer": _output_forecast(TAYLOR1, "interval", 1, label="taylorseer"),
    "forecast-spectrum": _output_forecast(SPECTRAL_TAYLOR, "interval", 1, label="spectrum"),
    "forecast-spectrum-plan": _output_forecast(SPECTRAL_TAYLOR, "planned", 0, label="spectrum-plan"),
    "forecast-cg-taylor": _output_forecast(TAYLOR1, "confidence", 1, threshold=0.5, label="cg-taylor"),
    "forecast-taylorseer-stack": _block_cache(**_cache_fields("static", 0.1, 3, forecast=TAYLOR1, interval=3)),
    "forecast-spectrum-block": _block_cache(**_cache_fields("static", 0.1, 3, forecast=SPECTRAL_TAYLOR,
                                                            granularity="block", interval=3)),
})


# --- sparse attention: every policy (torch reference path), both budgets and both allocations ------------------

def _sparse(policy: str, params, sparsity: float = 0.5, top_p: float | None = None, allocation: str = "uniform",
            dense_layers: tuple[int, ...] = ()) -> Case:
    config = SparseAttentionConfig(policy=policy, sparsity=sparsity, top_p=top_p, block_size=16, warmup_steps=2,
                                   dense_layers=dense_layers, min_tokens=0, params=params, backend="torch",
                                   allocation=allocation)
    return Case(lambda: (SparseAttentionPatch(config),))


CASES.update({
    "sparse-pisa-calibrated": _sparse("pisa", PisaParams(order=0, mixing="block", spread_weight=1.0, sub_block=2),
                                      sparsity=0.6, allocation="calibrated"),
    "sparse-pisa-top-p": _sparse("pisa", PisaParams(order=1, mixing="block", spread_weight=1.0, sub_block=0),
                                 top_p=0.9),
    "sparse-sol-attn": _sparse("sol-attn", SolParams(tau=1.6, neighbours=1, pooled_tail=True)),
    "sparse-draft": _sparse("draft", DraftParams(reorder=True), dense_layers=(0,)),
    "sparse-cluster": _sparse("cluster", ClusterParams(clusters=0, iterations=8)),
    "sparse-grat": _sparse("grat", GratParams(pattern="criss-cross", radius=-1)),
    "sparse-window": _sparse("window", WindowParams(spatial=-1, temporal=1)),
    "sparse-dense": _sparse("dense", None, sparsity=0.0),
})


# --- head guidance: SoftPAG on two heads branched off the cond pass, and layer-level PAG as a full pass ---------

def _softpag(**fields) -> Case:
    config = SoftPAGConfig(**fields)
    return Case(lambda: (SoftPAGPatch(config),), post_cfg=lambda: softpag_post_cfg(config))


CASES.update({
    "softpag-heads": _softpag(heads=((2, 0), (4, 0)), scale=2.0, alpha=0.8, start_percent=0.0, end_percent=0.6,
                              reuse_prefix=True),
    "softpag-layer": _softpag(heads=((5, None),), scale=2.0, alpha=1.0, start_percent=0.0, end_percent=1.0,
                              reuse_prefix=False),
})


# --- quantized weights (a quantized deep copy of the model; calibration on its own noise) ---------------------

def _quantized_layer(name: str, module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) and name.startswith(QUANT_BLOCKS)


def _quantized(config) -> Case:
    def prepare(full: torch.nn.Module) -> torch.nn.Module:
        model = copy.deepcopy(full)
        stats = None
        if getattr(config, "needs_calibration", False):
            with collect_channel_stats(model, _quantized_layer, gram=getattr(config, "needs_gram", False)) as stats:
                sample(model, Case(), seed=CALIBRATION_SEED, steps=CALIBRATION_STEPS)
        return quantize_(model, config, _quantized_layer, calibration=stats)
    return Case(prepare_model=prepare)


CASES.update({
    "quant-tlq-w4-datafree": _quantized(WeightOnlyConfig(bits=4, group_size=64, codebook="twin_log",
                                                         clip_search=True, calibration="none")),
    "quant-w8a8-rotation": _quantized(Int8Config(rotation="adaptive", rotation_group=64, act_group=32,
                                                 weight_group=32, outlier_ratio=6.0, smooth_alpha=0.4)),
    "quant-int8-convrot": _quantized(Int8Config(rotation="hadamard", rotation_group=256, act_group=0,
                                                weight_group=0, outlier_ratio=6.0, smooth_alpha=0.4)),
})


def environment() -> dict[str, str]:
    """What the recorded floats depend on besides the code: a different CPU kernel set or torch may round
    differently, and the test skips (saying so) rather than fail on that."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "threads": "1"}


def run_case(name: str, model: torch.nn.Module | None = None) -> torch.Tensor:
    """One case's latents, computed single-threaded (a CPU reduction's split may depend on the thread count)."""
    case = CASES[name]
    model = model if model is not None else load_model()
    if case.prepare_model is not None:
        model = case.prepare_model(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return sample(model, case).contiguous()
    finally:
        torch.set_num_threads(threads)


def record(names: list[str], overwrite: bool) -> None:
    existing = load_file(str(GOLDEN_FILE)) if GOLDEN_FILE.exists() else {}
    if existing and not overwrite:
        raise SystemExit(f"{GOLDEN_FILE} exists: the goldens are the outputs from before the refactor. Pass "
                         "--overwrite (with --only NAME for one case) only for a change meant to alter outputs.")
    model = load_model()
    outputs = dict(existing)
    for name in names:
        outputs[name] = run_case(name, model)
        print(f"recorded {name}", file=sys.stderr)
    stale = set(outputs) - set(CASES)
    for name in stale:
        del outputs[name]
    save_file(outputs, str(GOLDEN_FILE), metadata=environment())
    print(f"wrote {len(outputs)} cases to {GOLDEN_FILE} ({GOLDEN_FILE.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overwrite", action="store_true", help="replace recorded outputs (refused otherwise)")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), help="record these cases, keep the others")
    args = parser.parse_args()
    record(args.only or list(CASES), args.overwrite)
