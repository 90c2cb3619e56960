"""Wan 2.1 / 2.2 (ComfyUI's `comfy/ldm/wan/model.py` `WanModel` and its subclasses) and our reference model.

Hooks used, no forward copied (checked against ComfyUI 0.8.0 and 0.33.0):
  * `patches_replace["dit"][("double_block", i)]` for every block; args {"img", "txt", "vec", "pe",
    "transformer_options"}, returns {"img"};
  * `transformer_options["optimized_attention_override"]`: q, k, v arrive as (B, L, heads*head_dim) with `heads=`;
  * the DIFFUSION_MODEL wrapper gets transformer_options at args[5].
"""
from __future__ import annotations

from .base import BlockKind, FamilyAdapter
from .registry import register_adapter


@register_adapter
class WanAdapter(FamilyAdapter):
    name = "wan"
    class_names = ("WanModel", "WanDiT")
    block_prefixes = ("blocks",)
    block_kinds = (BlockKind("block", "double_block", lambda m: len(m.blocks), ("img",)),)
    transformer_options_arg = 5
