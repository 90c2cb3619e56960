"""The "DiT Head Guidance" node (SoftPAG on chosen heads) and the "DiT HeadHunter" node (find heads on the
reference model)."""
from __future__ import annotations

import dataclasses
import logging

from comfy_api.latest import io

from ..accel.guidance.headhunter import HuntConfig, found_heads, hunt_reference, preset_from_record
from ..accel.guidance.heads import format_heads
from ..accel.guidance.presets import AUTO, guidance_for_model, preset_names, save_preset
from ..accel.guidance.softpag import SoftPAGConfig
from ..accel.memory import AUTO as AUTO_MEMORY
from .comfy.sampler import attach_head_guidance
from .compat import ADVANCED
from .memory_input import memory_budget_input

log = logging.getLogger("dit_accel")


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
                io.String.Input("heads", default=AUTO,
                                tooltip="auto: the head preset measured on a model of this family and shape where "
                                        "one ships, otherwise every head of the model's middle block (layer-level "
                                        "PAG); the run's log line says which. Or a preset name (" +
                                        ", ".join(preset_names()) + "), or 'layer:head' pairs such as '3:1, 5:0' "
                                        "('6:*' = every head of layer 6). Layers count the model's blocks in order "
                                        "(Flux: double blocks, then single blocks); the node names the valid range "
                                        "if a pair is outside the model."),
                io.Float.Input("start_percent", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="Guide from this fraction of the schedule on. The first steps settle what "
                                       "the image shows (the reference preset starts at 0.2 to keep it)."),
                io.Float.Input("end_percent", default=0.8, min=0.0, max=1.0, step=0.01,
                               tooltip="Guide until this fraction of the schedule. Each guided step costs an extra "
                                       "partial pass; late steps mostly refine texture."),
                io.Boolean.Input("use_preset_settings", default=False, **ADVANCED,
                                 tooltip="With a preset, take scale, alpha and start/end percent from the preset "
                                         "(the settings it was found with) instead of the inputs above."),
                memory_budget_input("the extra pass recomputes the blocks before the first perturbed layer "
                                    "instead of keeping the cond pass's input to it (one hidden state)"),
            ],
            outputs=[io.Model.Output(tooltip="The model with head-level perturbation guidance attached.")],
        )

    @classmethod
    def execute(cls, model, scale: float, alpha: float, heads: str, start_percent: float, end_percent: float,
                use_preset_settings: bool = False, memory: float = AUTO_MEMORY) -> io.NodeOutput:
        settings = dict(scale=scale, alpha=alpha, start_percent=start_percent, end_percent=end_percent)
        config, source = guidance_for_model(heads, model.get_model_object("diffusion_model"), settings,
                                            use_preset_settings)
        config = dataclasses.replace(config, memory_gib=memory)
        return io.NodeOutput(attach_head_guidance(model, config, source))


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
        guidance = SoftPAGConfig(scale=scale, alpha=alpha, end_percent=0.6)
        record = hunt_reference(objective, guidance, seeds, steps, HuntConfig(max_heads, budget), score_layers=False)
        text = format_heads(found_heads(record))
        log.info("dit-accel HeadHunter found: %s", text or "no head that improves the objective")
        name = preset_name.strip()
        if name and text:
            command = (f"the DiT HeadHunter node (objective {objective}, budget {budget}, max_heads {max_heads}, "
                       f"scale {scale:g}, alpha {alpha:g}, steps {steps}, seeds {seeds})")
            log.info("dit-accel HeadHunter saved preset %r to %s", name,
                     save_preset(preset_from_record(record, name, command)))
        return io.NodeOutput(text)


NODES = [DiTHeadGuidance, DiTHeadHunter]
