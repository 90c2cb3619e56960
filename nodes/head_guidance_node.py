"""The "DiT Head Guidance" node (SoftPAG on chosen heads) and the "DiT HeadHunter" node (find heads on the
reference model)."""
from __future__ import annotations

import logging

import comfy.samplers
from comfy_api.latest import io

from ..accel.adapters.registry import adapter_for
from ..accel.guidance.heads import HeadSpecError, count_heads, format_heads, parse_heads, validate_heads
from ..accel.guidance.presets import load_preset, preset_names
from ..accel.guidance.softpag import SoftPAGConfig, SoftPAGPatch, branch_options, guide, schedule_percent
from ..accel.host import RUN_KEY
from .comfy_bridge import apply_patch
from .compat import ADVANCED

log = logging.getLogger("dit_accel")
DEFAULT_PRESET = "reference-digits"


def resolve_heads(text: str, diffusion_model) -> tuple[tuple, dict]:
    """(head pairs, the preset's settings or {}) from a preset name or a 'layer:head, ...' list, checked against
    the model; raises a ValueError that names the valid range or the available presets."""
    adapter = adapter_for(diffusion_model)
    layers = len(adapter.block_layout(diffusion_model))
    per_layer = count_heads(diffusion_model)
    name = text.strip()
    if name in preset_names():
        preset = load_preset(name)
        preset.check_model(adapter.name, layers, per_layer)
        return preset.heads, preset.settings
    if not any(ch.isdigit() for ch in name):
        raise HeadSpecError(f"heads {name!r} is neither a preset ({', '.join(preset_names()) or 'none shipped'}) "
                            "nor a 'layer:head' list such as '3:1, 5:0'")
    heads = parse_heads(name)
    validate_heads(heads, layers, per_layer)
    return heads, {}


def post_cfg_function(config: SoftPAGConfig):
    """ComfyUI's sampler_post_cfg_function: the perturbed branch through calc_cond_batch, marked for our patch."""

    def post_cfg(args: dict):
        cfg_result = args["denoised"]
        model_options = args["model_options"]
        to = model_options.get("transformer_options", {})
        percent = schedule_percent(args["sigma"], to.get("sample_sigmas"))
        # An unknown schedule (a custom sampler) counts as the start: the default window still guides.
        if not config.guides(0.0 if percent is None else percent) or to.get(RUN_KEY) is None:
            return cfg_result
        options = dict(model_options)
        options["transformer_options"] = branch_options(to)
        (perturbed,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"],
                                                      options)
        return guide(cfg_result, args["cond_denoised"], perturbed, config.scale)

    return post_cfg


class DiTHeadGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelHeadGuidance",
            display_name="DiT Head Guidance",
            category="dit-accel",
            description="Perturbation guidance on chosen attention heads (SoftPAG, from 'Fine-Grained Perturbation "
                        "Guidance via Attention Head Selection'): an extra pass with those heads' attention blended "
                        "toward identity, and the sample is steered away from it. The extra pass starts from the "
                        "cond pass's state at the first perturbed layer, so it costs less than layer-level PAG. "
                        "Works with and without CFG and together with the other dit-accel nodes.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (any family dit-accel supports)."),
                io.Float.Input("scale", default=2.0, min=0.0, max=20.0, step=0.05,
                               tooltip="Guidance strength: out = cfg + scale * (cond - perturbed). 0 turns the node "
                                       "off (output identical to the model without it)."),
                io.Float.Input("alpha", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Softness: how far each selected head's attention map moves toward identity. "
                                       "1 = PAG on those heads, lower = gentler (fewer artifacts), 0 = off."),
                io.String.Input("heads", default=DEFAULT_PRESET,
                                tooltip="A head preset name (" + ", ".join(preset_names()) + ") or a list of "
                                        "'layer:head' pairs such as '3:1, 5:0' ('6:*' = every head of layer 6). "
                                        "Layers count the model's blocks in order (Flux: double blocks, then single "
                                        "blocks); the node names the valid range if a pair is outside the model."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Guide from this fraction of the schedule on."),
                io.Float.Input("end_percent", default=0.6, min=0.0, max=1.0, step=0.01,
                               tooltip="Guide until this fraction of the schedule. Each guided step costs an extra "
                                       "partial pass; late steps mostly refine texture."),
                io.Boolean.Input("use_preset_settings", default=False, **ADVANCED,
                                 tooltip="With a preset, take scale, alpha and start/end percent from the preset "
                                         "(the settings it was found with) instead of the inputs above."),
            ],
            outputs=[io.Model.Output(tooltip="The model with head-level perturbation guidance attached.")],
        )

    @classmethod
    def execute(cls, model, scale: float, alpha: float, heads: str, start_percent: float, end_percent: float,
                use_preset_settings: bool = False) -> io.NodeOutput:
        pairs, preset_settings = resolve_heads(heads, model.get_model_object("diffusion_model"))
        settings = dict(scale=scale, alpha=alpha, start_percent=start_percent, end_percent=end_percent)
        if use_preset_settings:
            settings.update(preset_settings)
        config = SoftPAGConfig(heads=pairs, **settings)
        # Outermost: the patch must see every block of both passes to save and serve the shared prefix.
        patched = apply_patch(model, SoftPAGPatch(config), first=True)
        patched.set_model_sampler_post_cfg_function(post_cfg_function(config))
        return io.NodeOutput(patched)


class DiTHeadHunter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..accel.guidance.reference_objective import OBJECTIVES
        return io.Schema(
            node_id="DiTAccelHeadHunter",
            display_name="DiT HeadHunter (reference model)",
            category="dit-accel",
            description="Searches, on the bundled reference digits model, for the attention heads whose "
                        "perturbation most improves an objective judged by the bundled classifier (greedy, one head "
                        "per round). Outputs the head list for DiT Head Guidance and can save it as a preset. "
                        "Each evaluation samples the model: keep the budget small on a CPU.",
            inputs=[
                io.Combo.Input("objective", options=list(OBJECTIVES), default="fd",
                               tooltip="fd: Fréchet distance of the samples to held-out real digits in the "
                                       "classifier's features (lower is better); confidence: the classifier's "
                                       "probability of the requested digit."),
                io.Int.Input("budget", default=20, min=2, max=500,
                             tooltip="Objective evaluations (each one a sampling run of 10 digits per seed)."),
                io.Int.Input("max_heads", default=3, min=1, max=16, tooltip="Stop after this many heads."),
                io.Float.Input("scale", default=2.0, min=0.0, max=20.0, step=0.05,
                               tooltip="Guidance scale used while searching."),
                io.Float.Input("alpha", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="SoftPAG softness used while searching."),
                io.Int.Input("steps", default=8, min=2, max=50, **ADVANCED,
                             tooltip="Sampling steps per evaluation."),
                io.Int.Input("seeds", default=1, min=1, max=16, **ADVANCED,
                             tooltip="Noise seeds per evaluation (10 digits each)."),
                io.String.Input("preset_name", default="", **ADVANCED,
                                tooltip="If set, save the found heads as this preset for DiT Head Guidance."),
            ],
            outputs=[io.String.Output(tooltip="The found heads as 'layer:head, ...' (connect to DiT Head Guidance's "
                                              "heads input).")],
        )

    @classmethod
    def execute(cls, objective: str, budget: int, max_heads: int, scale: float, alpha: float, steps: int = 8,
                seeds: int = 1, preset_name: str = "") -> io.NodeOutput:
        argv = ["--objective", objective, "--budget", str(budget), "--max-heads", str(max_heads), "--scale",
                str(scale), "--alpha", str(alpha), "--steps", str(steps), "--seeds", str(seeds), "--no-layers"]
        found = _run_hunt(argv + (["--name", preset_name.strip()] if preset_name.strip() else []))
        return io.NodeOutput(found)


def _run_hunt(argv: list[str]) -> str:
    """Run the search as the script does and return the found heads as text."""
    import json
    import tempfile
    from pathlib import Path

    from ..accel.guidance.headhunter import main
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "hunt.json"
        main(argv + ["--json", str(record)])
        heads = [tuple(p) for p in json.loads(record.read_text())["found"]["heads"]]
    text = format_heads(heads)
    log.info("dit-accel HeadHunter found: %s", text or "no head that improves the objective")
    return text


NODES = [DiTHeadGuidance, DiTHeadHunter]
