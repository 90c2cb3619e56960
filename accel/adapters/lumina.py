"""Lumina 2 and Z-Image (`comfy/ldm/lumina/model.py` `NextDiT`, and its pixel-space subclass).

NextDiT never consults `patches_replace` (checked against ComfyUI 0.8.0 and 0.33.0), so its main layer loop
(`self.layers`) gets the hook through the model patcher instead: `object_patches()` gives one `add_object_patch`
per layer, on `layers.N.forward`, with a `LayerForward`. That callable looks up our own key `(LAYER_KEY, N)` in
`transformer_options["patches_replace"]["dit"]` and hands the call to what it finds there with ComfyUI's usual
replacement contract, `fn(args, {"original_block": ...})`; with nothing there (a model call outside a dit-accel run, or
a MODEL without our node sharing the patched weights) it runs the layer's own forward unchanged. No forward code is
copied: the layer's own `forward` runs every time the block is computed. The key is ours, not ("double_block", i), so
other packs' replacements keep meaning what they meant on this family (nothing).

Replacement args: {"img", "x_mask", "freqs_cis", "adaln_input", "transformer_options"} plus "timestep_zero_index"
where the installed ComfyUI passes it (0.33.0); returns {"img"}. img is the joint [text | image] sequence. With
reference latents (Z-Image omni) `adaln_input` has two rows per sample (a zero-timestep half first): patches get it
as "adaln_input" and "adaln_input_ref", one row each per sample, so running a block on a subset of rows stays aligned
(the block kind's flatten / unflatten).

Attention: `JointAttention` calls `optimized_attention_masked(q, k, v, heads, mask, skip_reshape=True,
transformer_options=...)` in both versions, so `optimized_attention_override` sees every call (main layers and the
context / noise refiners) as (B, H, L, D) with heads positional. NextDiT writes `block_type` / `block_index` only in the
main loop: calls without them are the refiners' single-stream self-attention.

Sequence parallelism: the main layers are single-stream (caption and image tokens go through the same weights, the
adaLN rows apply to every token), so the whole joint [caption | image] stream is split across ranks as one sequence,
with its rotary table `freqs_cis` (B, L, 1, ...) on dim 1; the caption needs no special place. Omni's
`timestep_zero_index` ((start, end) token ranges with the zero-timestep row) is remapped onto each rank's tokens.
`x_mask` is None in both versions (captions are padded to one length); a padding mask would be refused.
"""
from __future__ import annotations

import dataclasses
import inspect
import re

import torch

from ..patch import AttentionCall
from .base import BlockKind, FamilyAdapter, SequenceLayout
from .registry import register_adapter

LAYER_KEY = "dit_accel_lumina_layer"  # our patches_replace["dit"] key; only LayerForward reads it

# What the object patch relies on, read from the installed ComfyUI's source: (what, where, pattern).
_HOOKS = (
    ("a main loop over self.layers", "model", r"for\s+\w+\s*,\s*layer\s+in\s+enumerate\(self\.layers\)"),
    ("transformer_options passed to each layer by keyword", "model",
     r"layer\(img,[^\n]*transformer_options\s*=\s*transformer_options"),
    ("attention through optimized_attention with transformer_options", "attention",
     r"optimized_attention\w*\([^\n]*transformer_options\s*=\s*transformer_options"),
)


def _split_rows(args: dict) -> dict:
    """Omni calls carry two adaLN rows per sample: hand them over as two tensors with one row per sample each."""
    vec, img = args.get("adaln_input"), args["img"]
    if args.get("timestep_zero_index") is not None and isinstance(vec, torch.Tensor) \
            and vec.shape[0] == 2 * img.shape[0]:
        args = dict(args)
        args["adaln_input_ref"], args["adaln_input"] = vec.chunk(2)
    return args


def _join_rows(args: dict) -> dict:
    if "adaln_input_ref" not in args:
        return args
    args = dict(args)
    args["adaln_input"] = torch.cat((args.pop("adaln_input_ref"), args["adaln_input"]))
    return args


class LayerForward:
    """Stands in for `layers[index].forward` while the model patcher has the object patch applied."""

    def __init__(self, layer: torch.nn.Module, index: int):
        self.layer = layer
        self.index = index
        self.signature = inspect.signature(type(layer).forward)

    def _original(self, *args, **kwargs):
        return type(self.layer).forward(self.layer, *args, **kwargs)

    def __call__(self, x, *args, **kwargs):
        to = kwargs.get("transformer_options")
        replace = ((to or {}).get("patches_replace") or {}).get("dit") or {}
        fn = replace.get((LAYER_KEY, self.index))
        if fn is None:
            return self._original(x, *args, **kwargs)
        bound = self.signature.bind(self.layer, x, *args, **kwargs)
        named = {k: v for k, v in bound.arguments.items() if k not in ("self", "x")}
        passed = tuple(named)  # parameters the caller gave: handed back exactly, defaults left to the layer

        def original_block(a: dict) -> dict:  # ComfyUI's args layout (the host unflattens before calling it)
            return {"img": self._original(a["img"], **{k: a[k] for k in passed})}

        return fn({"img": x, **named}, {"original_block": original_block})["img"]


def _layer_count(model: torch.nn.Module) -> int:
    return len(model.layers)


@register_adapter
class LuminaAdapter(FamilyAdapter):
    name = "lumina"
    class_names = ("NextDiT",)
    block_prefixes = ("layers",)
    block_kinds = (BlockKind("layer", LAYER_KEY, _layer_count, ("img",), flatten=_split_rows,
                             unflatten=_join_rows),)
    # NextDiT.forward(x, timesteps, context, num_tokens, attention_mask=None, **kwargs): TO only as a keyword.
    transformer_options_arg = -1
    head_count_paths = ("n_heads",)
    attention_kind = "joint"
    sequence_layout = SequenceLayout(pe_key="freqs_cis", pe_token_dim=1, range_keys=("timestep_zero_index",),
                                     refuse_keys=(("x_mask", "a padding mask over the caption and image tokens"),))

    def missing_hooks(self, model_class: type) -> list[str]:
        try:
            sources = {"model": inspect.getsource(model_class._forward),
                       "attention": inspect.getsource(inspect.getmodule(model_class).JointAttention)}
        except AttributeError as err:  # the forward or the attention class is gone
            return [f"NextDiT._forward and JointAttention ({err})"]
        except (OSError, TypeError):  # no source to read (compiled or generated): trust the class name, like base
            return []
        return [what for what, where, pattern in _HOOKS if not re.search(pattern, sources[where])]

    def object_patches(self, diffusion_model: torch.nn.Module) -> dict[str, object]:
        return {f"layers.{i}.forward": LayerForward(layer, i) for i, layer in enumerate(diffusion_model.layers)}

    def attention_call(self, backend, args: tuple, kwargs: dict) -> AttentionCall:
        call = super().attention_call(backend, args, kwargs)
        if call.block_kind is None:  # context / noise refiners: one stream attending to itself
            call = dataclasses.replace(call, kind="self")
        return call
