"""SD3 / SD3.5 MMDiT (`comfy/ldm/modules/diffusionmodules/mmdit.py` `OpenAISignatureMMDITWrapper`).

Hooks used, no forward copied (checked against ComfyUI 0.8.0 and 0.33.0):
  * `patches_replace["dit"][("double_block", i)]`: args {"img", "txt", "vec", "transformer_options"}, returns
    {"img", "txt"}; txt is None after the last block (pre_only);
  * attention: q, k (B, L, H*D) but v (B, L, H, D), `heads=` keyword, joint [context | x];
  * this family has no DIFFUSION_MODEL wrapper and writes no block keys: the host builds the step context at the
    first block instead, and knows the block from its own replacement.
"""
from __future__ import annotations

from .base import BlockKind, FamilyAdapter
from .registry import register_adapter


@register_adapter
class SD3Adapter(FamilyAdapter):
    name = "sd3"
    # Not the base name "MMDiT": AuraFlow's model class (comfy/ldm/aura/mmdit.py) is also called MMDiT.
    class_names = ("OpenAISignatureMMDITWrapper",)
    block_prefixes = ("joint_blocks",)
    block_kinds = (BlockKind("block", "double_block", lambda m: len(m.joint_blocks), ("img", "txt")),)
    transformer_options_arg = -1
    has_model_wrapper = False
    attention_kind = "joint"
    # The token layout itself is plain (joint [context | x], no rotary table, SD3.5's extra image-only attention
    # already handled); what is missing is a way to mirror each call to the workers. ComfyUI does run an APPLY_MODEL
    # wrapper for SD3 (model_base.BaseModel.apply_model, 0.8.0 and 0.33.0), but that wraps the model-base step (input
    # scaling, conditioning), not the diffusion model's call the workers replay.
    sequence_parallel_refusal = ("ComfyUI runs its forward without a DIFFUSION_MODEL wrapper (0.8.0 and 0.33.0), the "
                                 "hook that hands each model call to the worker processes")
