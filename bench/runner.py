"""Run the unpatched reference model and accelerated variants on the same seeds, interleaved, and measure them.

Per seed, the full model and every method sample the same noise (one image per digit) one after the other, so the
wall-clock ratio compares runs made under the same machine load. Compute is counted from the work actually executed:
one extra pass per variant under torch's FlopCounterMode (not timed), plus the host's block ledger.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from ..accel.adapters.registry import adapter_for
from ..accel.host import AccelHost
from ..accel.standalone import accelerated
from ..reference.assets import load_classifier, load_model
from ..reference.conditioning import UNCONDITIONAL, label_context
from ..reference.digits import NUM_CLASSES, load_digits_split, upscale
from ..reference.latent import model_latents_to_images
from ..reference.sampling import sample_euler_cfg, simple_schedule
from . import metrics
from .methods import get_method

FULL = "full"


def _register_cpu_attention_flops() -> None:
    """torch counts no FLOPs for the CPU flash-attention op SDPA dispatches to; give it the standard formula."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None:
        return
    try:
        @register_flop_formula(op, get_raw=True)
        def _sdpa_cpu_flops(query, key, value, *args, out_val=None, **kwargs):
            b, h, lq, d = query.shape
            return 2 * b * h * lq * key.shape[-2] * (d + value.shape[-1])
    except Exception:  # noqa: BLE001 - already registered (re-import) or torch changed: FLOPs stay uncounted
        pass


_register_cpu_attention_flops()


@dataclass(frozen=True)
class BenchSettings:
    steps: int = 20
    seeds: int = 8
    cfg: float = 4.0
    digits_per_seed: int = NUM_CLASSES
    device: str = "cpu"
    count_flops: bool = True  # off for methods that cannot change the work (quantized weights): saves a pass each

    def __post_init__(self):
        if self.steps < 1 or self.seeds < 1 or self.digits_per_seed < 1:
            raise ValueError("steps, seeds and digits_per_seed must be at least 1")


@dataclass
class Judge:
    """The reference model, its classifier and the held-out real digits' features: loaded once per process."""

    device: str = "cpu"
    model: torch.nn.Module = field(init=False)
    classifier: torch.nn.Module = field(init=False)
    real_features: torch.Tensor = field(init=False)
    prepared: dict[str, torch.nn.Module] = field(init=False, default_factory=dict)

    def model_for(self, method: str | None) -> torch.nn.Module:
        """The model a method samples with: the full model, or what its `prepare_model` made of it (cached)."""
        prepare = get_method(method).prepare_model if method is not None else None
        if prepare is None:
            return self.model
        if method not in self.prepared:
            self.prepared[method] = prepare(self.model)
        return self.prepared[method]

    def __post_init__(self):
        self.model = load_model(device=self.device)
        self.classifier = load_classifier(device=self.device)
        held_out = load_digits_split()["test_images"]
        with torch.no_grad():
            self.real_features = self.classifier.features(upscale(held_out).to(self.device))


@dataclass
class VariantRecord:
    images: list[torch.Tensor] = field(default_factory=list)
    latents: list[torch.Tensor] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    flops: int = 0
    blocks_run: int = 0
    blocks_total: int = 0
    summary: list[str] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)  # what the patches measured, one value per run


def _labels(settings: BenchSettings) -> torch.Tensor:
    return torch.arange(settings.digits_per_seed) % NUM_CLASSES


def _noise(settings: BenchSettings, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(settings.digits_per_seed, 16, 1, 32, 32, generator=gen).to(settings.device)


def _sample(judge: Judge, method: str | None, settings: BenchSettings, noise: torch.Tensor, record: VariantRecord,
            count_flops: bool = False) -> torch.Tensor:
    labels = _labels(settings)
    cond = label_context(labels, device=settings.device)
    uncond = label_context([UNCONDITIONAL] * len(labels), device=settings.device)
    sigmas = simple_schedule(settings.steps)
    counter = FlopCounterMode(display=False) if count_flops else None
    start = time.perf_counter()
    if counter is not None:
        counter.__enter__()
    try:
        if method is None:
            out = sample_euler_cfg(lambda x, t, c, o: judge.model(x, t, c, o), noise, cond, uncond, sigmas,
                                   settings.cfg)
        else:
            spec, model = get_method(method), judge.model_for(method)
            post_cfg = spec.post_cfg(settings.steps) if spec.post_cfg is not None else None
            host = AccelHost(adapter_for(model), tuple(spec.build(settings.steps)))
            with accelerated(host, model) as (model_fn, run, summary):
                out = sample_euler_cfg(model_fn, noise, cond, uncond, sigmas, settings.cfg, post_cfg=post_cfg)
            if not count_flops:
                record.blocks_run += run.ledger.blocks_run
                record.blocks_total += run.ledger.blocks_total
                record.summary = summary
                for key, value in run.metrics.items():
                    record.metrics.setdefault(key, []).append(float(value))
    finally:
        if counter is not None:
            counter.__exit__(None, None, None)
    elapsed = time.perf_counter() - start
    if counter is not None:
        record.flops = counter.get_total_flops()
    else:
        record.wall.append(elapsed)
        record.latents.append(out.cpu())
        record.images.append(model_latents_to_images(out).cpu())
    return out


def compare(methods: list[str], settings: BenchSettings, judge: Judge | None = None,
            progress: bool = True) -> tuple[list[dict], dict[str, VariantRecord]]:
    """Benchmark `methods` against the full model; returns one result dict per method and the raw records."""
    for m in methods:
        get_method(m)  # fail before any work on an unknown name
    judge = judge or Judge(settings.device)
    records = {name: VariantRecord() for name in [FULL, *methods]}
    from tqdm.auto import tqdm
    flop_passes = len(records) if settings.count_flops else 0
    bar = tqdm(total=settings.seeds * len(records) + flop_passes, desc="sampling", disable=not progress,
               unit="run")
    for seed in range(settings.seeds):
        noise = _noise(settings, seed)
        for name, record in records.items():
            bar.set_postfix_str(f"seed {seed} {name}")
            _sample(judge, None if name == FULL else name, settings, noise, record)
            bar.update()
    if settings.count_flops:
        for name, record in records.items():  # the compute count: one untimed pass each on seed 0
            bar.set_postfix_str(f"counting FLOPs {name}")
            _sample(judge, None if name == FULL else name, settings, _noise(settings, 0), record, count_flops=True)
            bar.update()
    bar.close()
    labels = _labels(settings).repeat(settings.seeds)
    full = records[FULL]
    full_images = torch.cat(full.images)
    results = [_result(m, settings, judge, labels, full, full_images, records[m]) for m in methods]
    return results, records


def _result(method, settings, judge, labels, full, full_images, record) -> dict:
    images = torch.cat(record.images)
    latents, full_latents = torch.cat(record.latents), torch.cat(full.latents)
    with torch.no_grad():
        features = judge.classifier.features(images.to(settings.device))
        full_features = judge.classifier.features(full_images.to(settings.device))
    identical = torch.equal(latents, full_latents)
    spec = get_method(method)
    extra = spec.report(judge.model, judge.model_for(method)) if spec.report is not None else {}
    measured = {key: statistics.fmean(values) for key, values in record.metrics.items()}
    return {
        "method": method,
        "model": "reference",
        "steps": settings.steps,
        "seeds": settings.seeds,
        "images": int(images.shape[0]),
        "cfg": settings.cfg,
        "speedup_compute": full.flops / record.flops if record.flops else None,
        "speedup_blocks": record.blocks_total / record.blocks_run if record.blocks_run else None,
        "speedup_wall": statistics.median(full.wall) / statistics.median(record.wall),
        "wall_full_s": statistics.median(full.wall),
        "wall_method_s": statistics.median(record.wall),
        "identical": identical,
        "max_abs_diff": float((latents - full_latents).abs().max()),
        "psnr_db": metrics.psnr_db(images, full_images),
        "ssim": metrics.ssim(images, full_images),
        "class_accuracy": metrics.class_accuracy(judge.classifier, images, labels),
        "class_accuracy_full": metrics.class_accuracy(judge.classifier, full_images, labels),
        "fd_data": metrics.frechet_distance(features, judge.real_features),
        "fd_data_full": metrics.frechet_distance(full_features, judge.real_features),
        "flops_full": full.flops,
        "flops_method": record.flops,
        # transformer compute of the method / of the full model (CFG alone): > 1 for guidance's extra branch
        "cost_ratio": record.flops / full.flops if full.flops else None,
        **measured,
        **extra,
        "log": record.summary,
        "device": settings.device,
        "torch": torch.__version__,
    }
