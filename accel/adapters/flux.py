"""Flux 1 / Flux 2 (`comfy/ldm/flux/model.py` `Flux`) and Chroma (`comfy/ldm/chroma/model.py`, flux-layer blocks).

Hooks used, no forward copied (checked against ComfyUI 0.8.0 and 0.33.0):
  * `patches_replace["dit"][("double_block", i)]`: args {"img", "txt", "vec", "pe", "attn_mask",
    "transformer_options"}, returns {"img", "txt"};
  * `patches_replace["dit"][("single_block", i)]`: args {"img", "vec", "pe", "attn_mask", "transformer_options"},
    returns {"img"}, where img is the joint [txt | img] sequence;
  * attention through `optimized_attention_override`: (B, H, L, D) with `skip_reshape=True`, heads positional,
    joint text+image tokens;
  * DIFFUSION_MODEL wrapper: transformer_options at args[7] (Flux) / args[5] (Chroma).
Chroma skips the blocks listed in `skip_mmdit` / `skip_dit` without consulting the replacement.
"""
from __future__ import annotations

from .base import BlockKind, FamilyAdapter, SequenceLayout
from .registry import register_adapter

DOUBLE = BlockKind("double", "double_block", lambda m: len(m.double_blocks), ("img", "txt"))
SINGLE = BlockKind("single", "single_block", lambda m: len(m.single_blocks), ("img",))


@register_adapter
class FluxAdapter(FamilyAdapter):
    name = "flux"
    class_names = ("Flux",)
    block_prefixes = ("double_blocks", "single_blocks")
    block_kinds = (DOUBLE, SINGLE)
    transformer_options_arg = 7
    attention_kind = "joint"
    # Rotary table (B, 1, L, ...) over [txt | img]; single blocks carry the joint [txt | img] stream as "img".
    sequence_layout = SequenceLayout(pe_token_dim=2, text_key="txt", joint_kinds=("single",))
    img_slice_stale_in = ("double",)  # `img_slice` is written before the single blocks (the joint sequence)


@register_adapter
class ChromaAdapter(FluxAdapter):
    """Same blocks and attention as Flux; only the class and the wrapper's argument position differ."""

    name = "chroma"
    class_names = ("Chroma",)
    transformer_options_arg = 5
