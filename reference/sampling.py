"""A flow-matching Euler sampler with classifier-free guidance that mirrors ComfyUI's defaults for Wan 2.1.

Same sigma table (discrete flow, shift 8, multiplier 1000), same "simple" scheduler, same Euler update, and cond and
uncond batched into one model call with the `transformer_options` keys ComfyUI's sampler writes (`sigmas`,
`sample_sigmas`, `cond_or_uncond`, `uuids`), so a patch sees the same inputs here as inside ComfyUI.
"""
from __future__ import annotations

import uuid
from typing import Callable

import torch

WAN_SHIFT = 8.0
FLOW_MULTIPLIER = 1000.0
COND, UNCOND = 0, 1  # ComfyUI's cond_or_uncond codes

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]


def time_snr_shift(shift: float, t: torch.Tensor) -> torch.Tensor:
    return t if shift == 1.0 else shift * t / (1 + (shift - 1) * t)


def flow_sigma_table(shift: float = WAN_SHIFT, timesteps: int = 1000) -> torch.Tensor:
    return time_snr_shift(shift, torch.arange(1, timesteps + 1) / timesteps)


def simple_schedule(steps: int, shift: float = WAN_SHIFT) -> torch.Tensor:
    """ComfyUI's "simple" scheduler on the flow sigma table: `steps` sigmas from 1.0 down, then 0."""
    table = flow_sigma_table(shift)
    stride = len(table) / steps
    sigmas = [float(table[-(1 + int(i * stride))]) for i in range(steps)]
    return torch.tensor(sigmas + [0.0], dtype=torch.float32)


class StreamIds:
    """One stable uuid per conditioning stream for a whole run, as ComfyUI assigns per conditioning entry."""

    def __init__(self):
        self.cond, self.uncond = uuid.uuid4(), uuid.uuid4()


@torch.no_grad()
def sample_euler_cfg(model: ModelFn, noise: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
                     sigmas: torch.Tensor, cfg: float, transformer_options: dict | None = None,
                     callback: Callable[[int], None] | None = None,
                     post_cfg: Callable[[dict], torch.Tensor] | None = None) -> torch.Tensor:
    """Denoise `noise` (model space) along `sigmas`; returns model-space latents.

    `model(x, timestep, context, transformer_options)` predicts the flow velocity. With cfg == 1 the uncond pass is
    skipped, like ComfyUI's cfg-1 optimisation. `post_cfg(args)`, like ComfyUI's `sampler_post_cfg_function`, gets
    the guided prediction and may return a changed one (perturbation guidance runs its extra branch there); its
    args are ComfyUI's keys (`denoised`, `cond_denoised`, `uncond_denoised`, `input`, `sigma`) plus what a model
    call needs here: `model` (the model function), `context` (the cond context), `transformer_options` (the cond
    stream's options for this step), `step` and `steps`.
    """
    base_options = dict(transformer_options or {})
    ids = StreamIds()
    use_cfg = cfg != 1.0 and uncond is not None
    x = noise * sigmas[0]
    sigmas = sigmas.to(noise.device)
    b = noise.shape[0]
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        if use_cfg:
            x_in = torch.cat([x, x])
            context = torch.cat([cond, uncond])
            streams, uuids = [COND, UNCOND], [ids.cond, ids.uncond]
        else:
            x_in, context, streams, uuids = x, cond, [COND], [ids.cond]
        sigma_rows = sigma.expand(x_in.shape[0])
        options = {**base_options, "sigmas": sigma_rows, "sample_sigmas": sigmas,
                   "cond_or_uncond": streams, "uuids": uuids}
        velocity = model(x_in, sigma_rows * FLOW_MULTIPLIER, context, options)
        denoised = x_in - velocity * sigma
        if use_cfg:
            d_cond, d_uncond = denoised[:b], denoised[b:]
            denoised = d_uncond + (d_cond - d_uncond) * cfg
        else:
            d_cond, d_uncond = denoised, None
        if post_cfg is not None:
            cond_options = {**base_options, "sigmas": sigma.expand(b), "sample_sigmas": sigmas,
                            "cond_or_uncond": [COND], "uuids": [ids.cond]}
            denoised = post_cfg({"denoised": denoised, "cond_denoised": d_cond, "uncond_denoised": d_uncond,
                                 "input": x, "sigma": sigma.expand(b), "model": model, "context": cond,
                                 "transformer_options": cond_options, "step": i, "steps": len(sigmas) - 1})
        d = (x - denoised) / sigma
        x = x + d * (sigmas[i + 1] - sigma)
        if callback is not None:
            callback(i)
    return x
