"""HunyuanVideo 1 / 1.5 (`comfy/ldm/hunyuan_video/model.py` `HunyuanVideo`, flux-layer blocks).

Hooks used, no forward copied (checked against ComfyUI 0.8.0 and 0.33.0):
  * `patches_replace["dit"][("double_block", i)]`: args {"img", "txt", "vec", "pe", "attention_mask",
    "modulation_dims_img", "modulation_dims_txt", "transformer_options"}, returns {"img", "txt"};
  * `("single_block", i)`: args {"img", "vec", "pe", "attention_mask", "modulation_dims", "transformer_options"},
    returns {"img"} (the joint sequence: [img | txt] in 0.8.0, [txt | img] in 0.33.0);
  * attention: (B, H, L, D) with `skip_reshape=True`; the 2-block token refiner also attends, outside the loop
    (block_type absent);
  * DIFFUSION_MODEL wrapper: transformer_options at args[12].
"""
from __future__ import annotations

from .base import BlockKind, FamilyAdapter
from .registry import register_adapter


@register_adapter
class HunyuanVideoAdapter(FamilyAdapter):
    name = "hunyuan_video"
    class_names = ("HunyuanVideo",)
    block_prefixes = ("double_blocks", "single_blocks")
    block_kinds = (BlockKind("double", "double_block", lambda m: len(m.double_blocks), ("img", "txt")),
                   BlockKind("single", "single_block", lambda m: len(m.single_blocks), ("img",)))
    transformer_options_arg = 12
    attention_kind = "joint"
    sequence_parallel_refusal = ("its joint token order differs between ComfyUI versions and its blocks take per-token "
                                 "modulation ranges (modulation_dims), which the token split does not map yet")
    img_slice_stale_in = ("double",)  # `img_slice` is written before the single blocks (the joint sequence)
