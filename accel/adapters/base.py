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


@dataclass(frozen=True)
class SequenceLayout:
    """Where a family's image tokens sit, for sequence parallelism (`accel/parallel/ulysses.py`).

    Image tokens are split across ranks along dim 1 of `image_key`; the rotary table `pe_key` is split with them
    along `pe_token_dim` (its text rows, if any, stay whole; a tuple of tables, LTX-Video's, has each tensor split).
    Text stays whole on every rank. Other block args that run over the tokens are named so the split can follow:
    `token_keys` (a value per image token on dim 1), `range_keys` (token ranges), and `refuse_keys` (what cannot
    be split yet: the run fails with the reason instead of computing something else)."""

    image_key: str = "img"            # block arg holding the image tokens (B, L, C)
    pe_key: str | None = "pe"         # block arg holding the rotary table, None if the blocks get none
    pe_token_dim: int = 1             # the rotary table's token dimension
    text_key: str | None = None       # block arg holding the text stream that joins the image in one attention call
    joint_kinds: tuple[str, ...] = () # block kinds whose `image_key` stream is already [text | image] (Flux single)
    text_first: bool = True           # order of text and image in a joint attention call and a joint stream
    # Block args with one row per image token on dim 1 (LTX-Video's per-token timesteps, (B, L, C)); a size-1 dim 1
    # (one value for every token) is left whole.
    token_keys: tuple[str, ...] = ()
    # Block args holding token ranges (start, end or None, *rest) over the `image_key` stream as the block gets it
    # (HunyuanVideo's modulation_dims, Lumina's timestep_zero_index); remapped onto the rank's own tokens.
    range_keys: tuple[str, ...] = ()
    # (block arg, what it is): args that must be None (or absent) under sequence parallelism.
    refuse_keys: tuple[tuple[str, str], ...] = ()
    # (block arg, why): args that must hold one row for every token (dim 1 of size 1): per-token values are refused.
    single_row_keys: tuple[tuple[str, str], ...] = ()
    # Further rotary tables over the image tokens, split like `pe_key` (LTX-2's audio-video cross-attention ones).
    extra_pe_keys: tuple[str, ...] = ()
    # A `token_keys` value that is not a tensor (LTX-2's per-frame compressed timesteps) -> its (B, L, C) tensor.
    token_tensor: Callable[[object], torch.Tensor] | None = None
    # Block args with token streams every rank keeps whole besides "txt" (LTX-2's audio and its two text contexts):
    # one as long as a rank's image shard would make self- and cross-attention look alike, so it is refused.
    whole_keys: tuple[str, ...] = ()
    # Attention of other tokens onto the image tokens (LTX-2's video-to-audio cross-attention: audio queries, video
    # keys): every rank gathers the image keys and values for it.
    cross_onto_image: bool = False


class FamilyAdapter:
    """One model family. Subclasses live one per file in this package and register with `@register_adapter`."""

    name: str = "family"
    class_names: tuple[str, ...] = ()   # diffusion-model classes this adapter serves
    block_kinds: tuple[BlockKind, ...] = ()
    block_prefixes: tuple[str, ...] = ()  # module paths of the block lists ("blocks" -> blocks.N.*)
    transformer_options_arg: int = -1   # position of transformer_options in the DIFFUSION_MODEL wrapper's args
    has_model_wrapper: bool = True      # ComfyUI runs the forward through a DIFFUSION_MODEL wrapper (`around_model`)
    # Sequence parallelism: where the image tokens are; None = not supported (`sequence_parallel_refusal` says why).
    sequence_layout: SequenceLayout | None = None
    sequence_parallel_refusal: str = "its image tokens' layout in the block loop is not described yet"
    # Head layout: where the model keeps its attention heads per block, as attribute paths tried in order (a dotted
    # path reaches into a submodule, e.g. the first block's when the model itself does not record it).
    head_count_paths: tuple[str, ...] = ("num_heads",)

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

    def model_input(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The DIFFUSION_MODEL wrapper's noisy latent (the tensor whose rows are the call's batch)."""
        return args[0] if args else kwargs["x"]

    # Block kinds during which ComfyUI's `transformer_options["img_slice"]` belongs to another block kind (Flux and
    # HunyuanVideo write it before their single blocks only; a double block would read a stale value).
    img_slice_stale_in: tuple[str, ...] = ()

    def image_span(self, block_kind: str, transformer_options: dict) -> tuple[int, int] | None:
        """Where this block's image tokens sit in its joint attention sequence, if ComfyUI says so (`img_slice`)."""
        span = transformer_options.get("img_slice")
        if span is None or block_kind in self.img_slice_stale_in:
            return None
        return int(span[0]), int(span[1])

    def grid_hint(self, transformer_options: dict) -> tuple[int, ...] | None:
        """The image token grid (frames, height, width) the model reports for this call; None: infer it."""
        return None

    def heads_per_layer(self, diffusion_model: torch.nn.Module) -> int | None:
        """Attention heads of a block's self-attention (what a head index of guidance counts); None when unknown."""
        for path in self.head_count_paths:
            value = diffusion_model
            for part in path.split("."):
                value = getattr(value, part, None)  # a ModuleList's items are attributes "0", "1", ...
                if value is None:
                    break
            if isinstance(value, int) and value > 0:
                return value
        return None

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
            # The head count of the tensors handed over, not of the call: a patch may pass a subset of the heads
            # (sequence parallelism's head groups), and ComfyUI's backends reshape by `heads` even with skip_reshape.
            out = backend(q_, k_, v_, q_.shape[1], *rest_args, skip_reshape=True, skip_output_reshape=True, **rest)
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
