"""LTX-Video / LTX-2 video model (`comfy/ldm/lightricks/model.py` `LTXVModel`).

Hooks used, no forward copied (checked against ComfyUI 0.8.0 and 0.33.0):
  * `patches_replace["dit"][("double_block", i)]`: args {"img", "txt", "attention_mask", "vec", "pe",
    "transformer_options"} (+ "self_attention_mask", "prompt_timestep" in 0.33.0), returns {"img"};
  * attention: (B, L, H*D), heads positional; self-attention over video tokens, cross-attention over text;
  * DIFFUSION_MODEL wrapper: transformer_options at args[5]. No block keys are written: the host's replacement
    knows the block. The audio-video LTXAV model (tuple streams) is not served yet.
"""
from __future__ import annotations

from .base import BlockKind, FamilyAdapter
from .registry import register_adapter


@register_adapter
class LTXVAdapter(FamilyAdapter):
    name = "ltxv"
    class_names = ("LTXVModel",)
    block_prefixes = ("transformer_blocks",)
    block_kinds = (BlockKind("block", "double_block", lambda m: len(m.transformer_blocks), ("img",)),)
    transformer_options_arg = 5
    head_count_paths = ("num_attention_heads",)

    def matches(self, diffusion_model) -> bool:
        # LTXAV subclasses LTXVModel but passes (video, audio) tuples through its blocks.
        return type(diffusion_model).__name__ == "LTXVModel"
    sequence_parallel_refusal = ("its blocks take the rotary table as a (matrix, split) pair and per-token timesteps "
                                 "and masks, which the token split does not map yet")
