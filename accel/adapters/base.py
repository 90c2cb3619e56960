"""What a model-family adapter tells the host: how to recognise the model, where its blocks are, what a block
replacement receives and returns, and how its attention calls are laid out.

Adapters are declarative where they can be: the host does the installing (`patches_replace["dit"]`, the attention
override) the same way for every family that offers those hooks.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from ..patch import AttentionCall


@dataclass(frozen=True)
class BlockKind:
    kind: str                      # our name for the kind
    replace_key: str               # ComfyUI's patches_replace["dit"] key name: ("double_block", i), ...
    count: Callable[[torch.nn.Module], int]  # how many blocks of this kind the model has
    stream_keys: tuple[str, ...]   # token-stream keys a replacement receives and must return
    # Families that hand several streams over in one container (LTXAV's (video, audio) tuple under "img") translate
    # between ComfyUI's replacement args and one tensor per stream key; None (every other family) means as-is.
    flatten: Callable[[dict], dict] | None = None     # ComfyUI args or outputs -> one tensor per stream key
    unflatten: Callable[[dict], dict] | None = None   # the reverse, for the real block and ComfyUI's caller


class FamilyAdapter:
    """One model family. Subclasses live one per file in this package and register with `@register_adapter`."""

    name: str = "family"
    class_names: tuple[str, ...] = ()   # diffusion-model classes this adapter serves
    block_kinds: tuple[BlockKind, ...] = ()
    block_prefixes: tuple[str, ...] = ()  # module paths of the block lists ("blocks" -> blocks.N.*)
    transformer_options_arg: int = -1   # position of transformer_options in the DIFFUSION_MODEL wrapper's args
    has_model_wrapper: bool = True      # ComfyUI runs the forward through a DIFFUSION_MODEL wrapper (`around_model`)

    def matches(self, diffusion_model: torch.nn.Module) -> bool:
        # By class name along the MRO: subclasses (Wan VACE, camera, ...) share the block loop and its hooks, and
        # no ComfyUI import is needed to tell.
        return any(c.__name__ in self.class_names for c in type(diffusion_model).__mro__)

    def missing_hooks(self, model_class: type) -> list[str]:
        """The block-replacement hooks this adapter relies on that the installed model class no longer consults.

        Read from the class's source (and its bases'), so a ComfyUI update that renames or drops a hook disables the
        family with a clear message instead of silently running unpatched.
        """
        source = _class_source(model_class)
        if source is None:  # no source to read (a compiled or generated class): trust the class name
            return []
        return [f'patches_replace["dit"][("{k.replace_key}", i)]' for k in self.block_kinds
                if f'"{k.replace_key}"' not in source and f"'{k.replace_key}'" not in source]

    def object_patches(self, diffusion_model: torch.nn.Module) -> dict[str, object]:
        """Model-patcher object patches (`add_object_patch`, paths relative to the diffusion model) for families
        whose block loop has no replacement hook; none for the others."""
        return {}

    def block_layout(self, diffusion_model: torch.nn.Module) -> list[tuple[BlockKind, int]]:
        """Every block in execution order, as (kind, index within kind)."""
        return [(kind, i) for kind in self.block_kinds for i in range(kind.count(diffusion_model))]

    def transformer_options_of(self, args: tuple, kwargs: dict) -> dict | None:
        to = kwargs.get("transformer_options")
        if to is None and len(args) > self.transformer_options_arg >= 0:
            to = args[self.transformer_options_arg]
        return to if isinstance(to, dict) else None

    # Attention: ComfyUI's backends share one signature, (q, k, v, heads, mask=None, attn_precision=None,
    # skip_reshape=False, skip_output_reshape=False, **kwargs). With skip_reshape the tensors are already
    # (B, H, L, D); without it they are (B, L, H*D), except SD3's v, which is (B, L, H, D).
    attention_kind: str = "auto"  # "joint" for text+image attention in one call; "auto" tells self/cross by length

    def attention_call(self, backend: Callable, args: tuple, kwargs: dict) -> AttentionCall:
        """Normalise one attention call of this family into an AttentionCall (q, k, v as B, H, L, D)."""
        q, k, v = args[:3]
        heads = kwargs["heads"] if "heads" in kwargs else args[3]
        rest_args = args[4:]
        rest = {key: val for key, val in kwargs.items() if key not in ("heads", "skip_reshape", "skip_output_reshape")}
        to = kwargs.get("transformer_options") or {}

        def run_backend(q_, k_, v_):
            out = backend(q_, k_, v_, heads, *rest_args, skip_reshape=True, skip_output_reshape=True, **rest)
            return out

        bq, bk, bv = (_to_bhld(t, heads, kwargs.get("skip_reshape", False)) for t in (q, k, v))
        kind = self.attention_kind if self.attention_kind != "auto" else \
            ("self" if bk.shape[2] == bq.shape[2] else "cross")
        mask = kwargs["mask"] if "mask" in kwargs else (rest_args[0] if rest_args else None)
        return AttentionCall(bq, bk, bv, kind, to.get("block_type"), to.get("block_index"), run_backend,
                             mask if isinstance(mask, torch.Tensor) else None)

    def attention_output(self, out_bhld: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        """Lay a (B, H, L, D) result out the way this family's call site expects."""
        if kwargs.get("skip_output_reshape", False):
            return out_bhld
        b, h, l, d = out_bhld.shape
        return out_bhld.transpose(1, 2).reshape(b, l, h * d)


@functools.lru_cache(maxsize=None)
def _class_source(model_class: type) -> str | None:
    parts = []
    for cls in model_class.__mro__:
        if cls is object or cls.__module__.split(".")[0] == "torch":
            continue
        try:
            parts.append(inspect.getsource(cls))
        except (OSError, TypeError):
            return None
    return "\n".join(parts)


def _to_bhld(t: torch.Tensor, heads: int, skip_reshape: bool) -> torch.Tensor:
    if skip_reshape:
        return t
    if t.dim() == 4:  # (B, L, H, D): SD3's value tensor
        return t.transpose(1, 2)
    b, l, inner = t.shape
    return t.view(b, l, heads, inner // heads).transpose(1, 2)
