"""LTX-Video / LTX-2 video model (`comfy/ldm/lightricks/model.py` `LTXVModel`).

Hooks used, no forward copied (checked against ComfyUI 0.8.0 and 0.33.0):
  * `patches_replace["dit"][("double_block", i)]`: args {"img", "txt", "attention_mask", "vec", "pe",
    "transformer_options"} (+ "self_attention_mask", "prompt_timestep" in 0.33.0), returns {"img"};
  * attention: (B, L, H*D), heads positional; self-attention over video tokens, cross-attention over text;
  * DIFFUSION_MODEL wrapper: transformer_options at args[5]. No block keys are written: the host's replacement
    knows the block. The audio-video LTXAV model (tuple streams) is not served yet.

Sequence parallelism: the rotary table is a tuple ((cos, sin[, split]) in 0.8.0, (matrix, split) in 0.33.0) whose
tensors have the video tokens on dim 1; the timestep embedding "vec" is (B, 1, 6C), or (B, L, 6C) with one row per
token when a denoise mask gives tokens their own timesteps (image-to-video), and is split with the tokens. The
guide self-attention mask of 0.33.0's keyframe / IC-LoRA guides (rows and columns over the tokens) is refused.
"""
from __future__ import annotations

from .base import BlockKind, FamilyAdapter, SequenceLayout
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
    sequence_layout = SequenceLayout(pe_token_dim=1, token_keys=("vec",), refuse_keys=(
        ("self_attention_mask", "a guide self-attention mask (keyframe or IC-LoRA guide tokens)"),))
