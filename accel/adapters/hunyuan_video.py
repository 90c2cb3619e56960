"""HunyuanVideo 1 / 1.5 (`comfy/ldm/hunyuan_video/model.py` `HunyuanVideo`, flux-layer blocks).

Hooks used, no forward copied (checked against ComfyUI 0.8.0 and 0.33.0):
  * `patches_replace["dit"][("double_block", i)]`: args {"img", "txt", "vec", "pe", "attention_mask",
    "modulation_dims_img", "modulation_dims_txt", "transformer_options"}, returns {"img", "txt"};
  * `("single_block", i)`: args {"img", "vec", "pe", "attention_mask", "modulation_dims", "transformer_options"},
    returns {"img"} (the joint sequence: [img | txt] in 0.8.0, [txt | img] in 0.33.0);
  * attention: (B, H, L, D) with `skip_reshape=True`; the 2-block token refiner also attends, outside the loop
    (block_type absent);
  * DIFFUSION_MODEL wrapper: transformer_options at args[12].

Sequence parallelism: the rotary table (B, 1, L, ...) covers the joint tokens in the same order as the single blocks'
stream and the double blocks' attention, and that order changed between versions: 0.8.0 puts the text last
(`flipped_img_txt=True`, `ids = cat(img_ids, txt_ids)`), 0.33.0 first. The order is read from the installed forward's
source when the adapter is chosen (`missing_hooks`), never guessed. `modulation_dims` (I2V's guiding-frame rows:
(start, end, row) ranges over the image stream in double blocks, over the joint stream in single blocks) are remapped
onto each rank's tokens; the padded-text attention mask covers the whole joint sequence, which is what the attention
sees after the all-to-all, so it passes unchanged.
"""
from __future__ import annotations

import re

from .base import BlockKind, FamilyAdapter, SequenceLayout, _class_source
from .registry import register_adapter

# How the installed forward joins text and image: (pattern, text first?) for the rotary ids and the joint stream.
_ORDER = {"ids": ((r"torch\.cat\(\(txt_ids,\s*img_ids\)", True), (r"torch\.cat\(\(img_ids,\s*txt_ids\)", False)),
          "stream": ((r"torch\.cat\(\(txt,\s*img\),\s*1\)", True), (r"torch\.cat\(\(img,\s*txt\),\s*1\)", False))}


def joint_text_first(source: str) -> bool | None:
    """Whether this HunyuanVideo forward puts the text before the image in its joint sequence; None when the source
    does not say one order for both the rotary ids and the joint stream."""
    found = set()
    for patterns in _ORDER.values():
        hits = {first for pattern, first in patterns if re.search(pattern, source)}
        if len(hits) != 1:
            return None
        found |= hits
    return found.pop() if len(found) == 1 else None


@register_adapter
class HunyuanVideoAdapter(FamilyAdapter):
    name = "hunyuan_video"
    class_names = ("HunyuanVideo",)
    block_prefixes = ("double_blocks", "single_blocks")
    block_kinds = (BlockKind("double", "double_block", lambda m: len(m.double_blocks), ("img", "txt")),
                   BlockKind("single", "single_block", lambda m: len(m.single_blocks), ("img",)))
    transformer_options_arg = 12
    attention_kind = "joint"
    img_slice_stale_in = ("double",)  # `img_slice` is written before the single blocks (the joint sequence)
    _text_first: bool | None = None  # the installed model's joint order, read by `missing_hooks`

    def missing_hooks(self, model_class: type) -> list[str]:
        source = _class_source(model_class)
        self._text_first = joint_text_first(source) if source is not None else None
        return super().missing_hooks(model_class)

    @property
    def sequence_layout(self) -> SequenceLayout | None:
        if self._text_first is None:
            return None
        return SequenceLayout(pe_token_dim=2, text_key="txt", joint_kinds=("single",), text_first=self._text_first,
                              range_keys=("modulation_dims_img", "modulation_dims"))

    @property
    def sequence_parallel_refusal(self) -> str:
        return ("the installed HunyuanVideo forward does not show one joint text/image order for its rotary ids and "
                "its single-block stream (torch.cat((txt, img), 1) or (img, txt)), so the token split cannot place "
                "the text")
