"""Calibration for DiT Quantize: a few real sampling steps through ComfyUI's own sampler, with forward hooks on
the block linears recording their input statistics (per-channel absmax and, for GPTQ, the input Gram matrix).

Runs `nodes/comfy/sampler.run_ksampler` (core's KSampler path: noise, latent channels, progress bar) on the user's
prompts, once per pass of `gram_passes` so the Gram matrices held at once stay inside a memory budget; DiT Quantize
quantizes each pass's layers before the next pass runs (`PassCalibration`).
"""
from __future__ import annotations

from ..accel.quant.calibration import DEFAULT_GRAM_BUDGET, PassCalibration
from ..accel.quant.rotation import ChannelStats
from .comfy.sampler import run_ksampler


def calibration_passes(model, positive, negative, latent, steps: int, cfg: float, seed: int = 0, gram: bool = True,
                       budget_bytes: int | None = None) -> PassCalibration:
    """Per-layer input statistics of `model`'s diffusion model over `steps` Euler steps on the given prompts, one
    pass at a time as the quantizer asks for them (Gram matrices held at once: at most `budget_bytes`,
    DEFAULT_GRAM_BUDGET when None)."""
    if positive is None or latent is None:
        raise ValueError("calibration needs both a positive conditioning and a latent (e.g. Empty Latent Image at "
                         "the size you will sample); leave both unconnected to quantize without calibration")
    if negative is None:
        negative, cfg = positive, 1.0  # no negative: a plain conditional run
    budget_bytes = DEFAULT_GRAM_BUDGET if budget_bytes is None else budget_bytes
    return PassCalibration(model.get_model_object("diffusion_model"),
                           lambda: run_ksampler(model, seed, steps, cfg, positive, negative, latent),
                           gram, budget_bytes, name=f"DiT Quantize calibration ({steps} steps per pass)")


def calibrate(model, positive, negative, latent, steps: int, cfg: float, seed: int = 0, gram: bool = True,
              budget_bytes: int | None = None) -> dict[str, ChannelStats]:
    """Every layer's statistics of `calibration_passes`, collected up front (all held at once at the end)."""
    passes = calibration_passes(model, positive, negative, latent, steps, cfg, seed, gram, budget_bytes)
    return {n: passes.get(n) for names in passes.passes for n in names}
