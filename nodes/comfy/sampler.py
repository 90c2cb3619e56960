"""ComfyUI's sampler as the nodes use it: head-level perturbation guidance's extra branch as a post-CFG function,
and core's KSampler path for runs that only record activations (quantization's calibration).

ComfyUI calls `sampler_post_cfg_function`s after it has combined cond and uncond; the function here runs the
perturbed branch through `calc_cond_batch` (so the model patcher's wrappers, our host among them, see it like any
other model call), marked as SoftPAG's branch, and adds the guidance term.
"""
from __future__ import annotations

import comfy.samplers

from ...accel.guidance.softpag import SoftPAGConfig, SoftPAGPatch, branch_options, guide, schedule_percent
from ...accel.host import RUN_KEY
from .patcher import apply_patch


def attach_head_guidance(model, config: SoftPAGConfig, heads_source: str = ""):
    """A clone of `model` (a ModelPatcher) with SoftPAG on `config.heads`; `heads_source` (how they were chosen)
    goes into the run's log line."""
    # Outermost: the patch must see every block of both passes to save and serve the shared prefix.
    patched = apply_patch(model, SoftPAGPatch(config, heads_source), first=True)
    patched.set_model_sampler_post_cfg_function(post_cfg_function(config))
    return patched


def post_cfg_function(config: SoftPAGConfig):
    """ComfyUI's sampler_post_cfg_function: the perturbed branch through calc_cond_batch, marked for our patch."""

    def post_cfg(args: dict):
        cfg_result = args["denoised"]
        model_options = args["model_options"]
        to = model_options.get("transformer_options", {})
        percent = schedule_percent(args["sigma"], to.get("sample_sigmas"))
        # An unknown schedule (a custom sampler) counts as the start: the default window still guides. Without a
        # run (the MODEL sampled outside our OUTER_SAMPLE wrapper) there is no saved prefix: leave CFG alone.
        if not config.guides(0.0 if percent is None else percent) or to.get(RUN_KEY) is None:
            return cfg_result
        options = dict(model_options)
        options["transformer_options"] = branch_options(to)
        (perturbed,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"],
                                                      options)
        return guide(cfg_result, args["cond_denoised"], perturbed, config.scale)

    return post_cfg


def run_ksampler(model, seed: int, steps: int, cfg: float, positive, negative, latent,
                 sampler: str = "euler", scheduler: str = "simple"):
    """Core's KSampler path (`nodes.common_ksampler`: noise, latent channels, progress bar) on a MODEL."""
    import nodes  # ComfyUI's own nodes module, importable only inside a running ComfyUI
    return nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler, positive, negative, latent)
