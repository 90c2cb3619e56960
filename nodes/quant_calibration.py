"""Calibration for DiT Quantize: a few real sampling steps through ComfyUI's own sampler, with forward hooks on
the block linears recording their input statistics (per-channel absmax and, for GPTQ, the input Gram matrix).

Runs `nodes.common_ksampler` (core's KSampler path: noise, latent channels, progress bar) on the user's prompts, once
per pass of `gram_passes` so the Gram matrices held at once stay inside a memory budget.
"""
from __future__ import annotations

import logging

from ..accel.quant.api import collect_channel_stats, target_layers
from ..accel.quant.calibration import DEFAULT_GRAM_BUDGET, gram_passes
from ..accel.quant.rotation import ChannelStats

log = logging.getLogger("dit_accel")


def _run_sampler(model, seed, steps, cfg, positive, negative, latent) -> None:
    import nodes
    nodes.common_ksampler(model, seed, steps, cfg, "euler", "simple", positive, negative, latent)


def calibrate(model, positive, negative, latent, steps: int, cfg: float, seed: int = 0, gram: bool = True,
              budget_bytes: int | None = None) -> dict[str, ChannelStats]:
    """Per-layer input statistics of `model`'s diffusion model over `steps` Euler steps on the given prompts
    (Gram matrices held at once: at most `budget_bytes`, DEFAULT_GRAM_BUDGET when None)."""
    budget_bytes = DEFAULT_GRAM_BUDGET if budget_bytes is None else budget_bytes
    if positive is None or latent is None:
        raise ValueError("calibration needs both a positive conditioning and a latent (e.g. Empty Latent Image at "
                         "the size you will sample); leave both unconnected to quantize without calibration")
    if negative is None:
        negative, cfg = positive, 1.0  # no negative: a plain conditional run
    diffusion_model = model.get_model_object("diffusion_model")
    layers = [(name, linear.in_features) for name, linear in target_layers(diffusion_model)]
    passes = gram_passes(layers, budget_bytes) if gram else [[name for name, _ in layers]]
    if len(passes) > 1:
        log.info("DiT Quantize: calibrating in %d passes of %d steps (Gram matrices of %d layers do not fit "
                 "%.1f GiB at once)", len(passes), steps, len(layers), budget_bytes / 2 ** 30)
    stats: dict[str, ChannelStats] = {}
    for names in passes:
        wanted = set(names)
        with collect_channel_stats(diffusion_model, lambda n, m: n in wanted, gram=gram) as collected:
            _run_sampler(model, seed, steps, cfg, positive, negative, latent)
        stats.update(collected)
    unseen = [name for name, s in stats.items() if not s.tokens]
    if unseen:
        raise RuntimeError(f"calibration never reached {len(unseen)} layers (e.g. {unseen[0]}); another patch may "
                           "replace the blocks: quantize before other dit-accel or caching nodes")
    return stats
