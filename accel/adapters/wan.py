"""Wan 2.1 / 2.2 (ComfyUI's `comfy/ldm/wan/model.py` `WanModel` and its subclasses) and our reference model.

Hooks used, no forward copied (checked against ComfyUI 0.8.0 and 0.33.0):
  * `patches_replace["dit"][("double_block", i)]` for every block; args {"img", "txt", "vec", "pe",
    "transformer_options"}, returns {"img"};
  * `transformer_options["optimized_attention_override"]`: q, k, v arrive as (B, L, heads*head_dim) with `heads=`;
  * the DIFFUSION_MODEL wrapper gets transformer_options at args[5].
"""
from __future__ import annotations

from .base import BlockKind, FamilyAdapter, SequenceLayout
from .registry import register_adapter


@register_adapter
class WanAdapter(FamilyAdapter):
    name = "wan"
    class_names = ("WanModel", "WanDiT")
    block_prefixes = ("blocks",)
    block_kinds = (BlockKind("block", "double_block", lambda m: len(m.blocks), ("img",)),)
    transformer_options_arg = 5
    # Video tokens only in self-attention; the text enters through cross-attention (stays whole on every rank).
    sequence_layout = SequenceLayout(pe_token_dim=1)

    def grid_hint(self, transformer_options: dict) -> tuple[int, ...] | None:
        grid = transformer_options.get("grid_sizes")  # (frames, height, width) in tokens, written by the forward
        return tuple(int(g) for g in grid) if grid is not None else None
    head_count_paths = ("num_heads", "cfg.num_heads")  # ComfyUI's WanModel; our reference WanDiT's config
