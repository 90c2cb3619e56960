"""Qwen-Image (`comfy/ldm/qwen_image/model.py` `QwenImageTransformer2DModel`).

Hooks used, no forward copied (checked against ComfyUI 0.8.0 and 0.33.0):
  * `patches_replace["dit"][("double_block", i)]`: args {"img", "txt", "vec", "pe", "transformer_options"},
    returns {"img", "txt"} (the text mask and timestep_zero_index are closed over by ComfyUI);
  * attention: (B, H, L, D) with `skip_reshape=True`, heads and mask positional, joint [txt | img];
  * DIFFUSION_MODEL wrapper: transformer_options at args[6].
"""
from __future__ import annotations

from .base import BlockKind, FamilyAdapter, SequenceLayout
from .registry import register_adapter


@register_adapter
class QwenImageAdapter(FamilyAdapter):
    name = "qwen_image"
    class_names = ("QwenImageTransformer2DModel",)
    block_prefixes = ("transformer_blocks",)
    block_kinds = (BlockKind("block", "double_block", lambda m: len(m.transformer_blocks), ("img", "txt")),)
    transformer_options_arg = 6
    head_count_paths = ("transformer_blocks.0.num_attention_heads",)  # the model class keeps no head count
    attention_kind = "joint"
    sequence_layout = SequenceLayout(pe_token_dim=2, text_key="txt")  # rotary table (B, 1, L, ...) over [txt | img]
