"""Wan 2.1 / 2.2 (ComfyUI's `comfy/ldm/wan/model.py` `WanModel` and its subclasses) and our reference model.

Hooks used, no forward copied (checked against ComfyUI 0.8.0 and 0.33.0):
  * `patches_replace["dit"][("double_block", i)]` for every block; args {"img", "txt", "vec", "pe",
    "transformer_options"}, returns {"img"};
  * `transformer_options["optimized_attention_override"]`: q, k, v arrive as (B, L, heads*head_dim) with `heads=`;
  * the DIFFUSION_MODEL wrapper gets transformer_options at args[5].
"""
from __future__ import annotations

from typing import Callable

import torch

from ..patch import AttentionCall
from .base import BlockKind, FamilyAdapter
from .registry import register_adapter


def _to_bhld(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, l, inner = t.shape
    return t.view(b, l, heads, inner // heads).transpose(1, 2)


@register_adapter
class WanAdapter(FamilyAdapter):
    name = "wan"
    class_names = ("WanModel", "WanDiT")
    block_kinds = (BlockKind("block", "double_block", lambda m: len(m.blocks), ("img",)),)
    transformer_options_arg = 5

    def matches(self, diffusion_model: torch.nn.Module) -> bool:
        # Subclasses (VACE, camera, S2V, HuMo, ...) share the block loop and its hooks.
        return any(c.__name__ in self.class_names for c in type(diffusion_model).__mro__)

    def attention_call(self, backend: Callable, args: tuple, kwargs: dict) -> AttentionCall:
        q, k, v = args[:3]
        heads = kwargs["heads"] if "heads" in kwargs else args[3]
        rest = {key: val for key, val in kwargs.items() if key != "heads"}
        extra = args[4:]
        to = kwargs.get("transformer_options", {})

        def run_backend(q_, k_, v_):
            b, h, l, d = q_.shape
            flat = [t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h * d) for t in (q_, k_, v_)]
            out = backend(*flat, heads, *extra, **rest)
            return _to_bhld(out, h)

        # Self-attention attends over the block's own tokens; cross-attention over the (shorter) text context.
        kind = "self" if k.shape[1] == q.shape[1] else "cross"
        return AttentionCall(_to_bhld(q, heads), _to_bhld(k, heads), _to_bhld(v, heads), kind,
                             to.get("block_type"), to.get("block_index"), run_backend)

    def attention_output(self, out_bhld: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        b, h, l, d = out_bhld.shape
        return out_bhld.transpose(1, 2).reshape(b, l, h * d)
