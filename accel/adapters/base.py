"""What a model-family adapter tells the host: how to recognise the model, where its blocks are, what a block
replacement receives and returns, and how its attention calls are laid out.

Adapters are declarative where they can be: the host does the installing (`patches_replace["dit"]`, the attention
override) the same way for every family that offers those hooks.
"""
from __future__ import annotations

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


class FamilyAdapter:
    """One model family. Subclasses live one per file in this package and register with `@register_adapter`."""

    name: str = "family"
    class_names: tuple[str, ...] = ()   # diffusion-model classes this adapter serves
    block_kinds: tuple[BlockKind, ...] = ()
    transformer_options_arg: int = -1   # position of transformer_options in the DIFFUSION_MODEL wrapper's args

    def matches(self, diffusion_model: torch.nn.Module) -> bool:
        return type(diffusion_model).__name__ in self.class_names

    def check_supported(self, diffusion_model: torch.nn.Module) -> None:
        """Raise with a clear message if this instance of the family cannot be served (overridden per family)."""

    def block_layout(self, diffusion_model: torch.nn.Module) -> list[tuple[BlockKind, int]]:
        """Every block in execution order, as (kind, index within kind)."""
        return [(kind, i) for kind in self.block_kinds for i in range(kind.count(diffusion_model))]

    def transformer_options_of(self, args: tuple, kwargs: dict) -> dict | None:
        to = kwargs.get("transformer_options")
        if to is None and len(args) > self.transformer_options_arg >= 0:
            to = args[self.transformer_options_arg]
        return to if isinstance(to, dict) else None

    def attention_call(self, backend: Callable, args: tuple, kwargs: dict) -> AttentionCall:
        """Normalise one attention call of this family into an AttentionCall (q, k, v as B, H, L, D)."""
        raise NotImplementedError

    def attention_output(self, out_bhld: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        """Lay a (B, H, L, D) result out the way this family's call site expects."""
        raise NotImplementedError
