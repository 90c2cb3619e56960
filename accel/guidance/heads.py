"""Head selections: which (layer, head) pairs a perturbation touches, as users write them and as models allow them.

A *layer* is a block's position in the model's whole block loop (Flux: its double blocks, then its single blocks),
the same numbering the host gives `BlockCall.position`; a *head* is an index along dim 1 of the (B, H, L, D)
attention call. `layer:*` selects every head of a layer (layer-level PAG).
"""
from __future__ import annotations

import re

ALL_HEADS = None  # the head of a pair that selects every head of its layer

HeadPair = tuple[int, "int | None"]

_PAIR = re.compile(r"^\s*(\d+)\s*:\s*(\d+|\*)\s*$")


class HeadSpecError(ValueError):
    pass


def parse_heads(text: str) -> tuple[HeadPair, ...]:
    """`"3:1, 5:0, 6:*"` -> ((3, 1), (5, 0), (6, None)); sorted, duplicates dropped. Raises HeadSpecError."""
    pairs = []
    for part in (p for p in re.split(r"[,;\s]+(?=\d)", text.strip()) if p.strip()):
        match = _PAIR.match(part)
        if match is None:
            raise HeadSpecError(f"cannot read {part.strip()!r} as a head: write heads as 'layer:head' pairs "
                                "separated by commas, e.g. '3:1, 5:0', or 'layer:*' for every head of a layer")
        layer, head = int(match.group(1)), match.group(2)
        pairs.append((layer, ALL_HEADS if head == "*" else int(head)))
    if not pairs:
        raise HeadSpecError("no heads given: name a preset or write 'layer:head' pairs such as '3:1, 5:0'")
    return normalise(pairs)


def normalise(pairs) -> tuple[HeadPair, ...]:
    """Sorted unique pairs; a layer's `*` absorbs its single heads."""
    whole = {int(layer) for layer, head in pairs if head is ALL_HEADS}
    single = {(int(layer), int(head)) for layer, head in pairs if head is not ALL_HEADS and int(layer) not in whole}
    return tuple(sorted([(layer, ALL_HEADS) for layer in whole] + sorted(single),
                        key=lambda p: (p[0], -1 if p[1] is ALL_HEADS else p[1])))


def format_heads(pairs) -> str:
    return ", ".join(f"{layer}:{'*' if head is ALL_HEADS else head}" for layer, head in pairs)


def validate_heads(pairs, layers: int, heads_per_layer: int | None) -> None:
    """Raise a HeadSpecError naming the valid range when a pair is outside the model."""
    for layer, head in pairs:
        if not 0 <= layer < layers:
            raise HeadSpecError(f"layer {layer} does not exist: this model has {layers} blocks, so layers run "
                                f"0..{layers - 1}")
        if head is not ALL_HEADS and heads_per_layer is not None and not 0 <= head < heads_per_layer:
            raise HeadSpecError(f"head {layer}:{head} does not exist: this model has {heads_per_layer} attention "
                                f"heads per layer, so heads run 0..{heads_per_layer - 1}")


def by_layer(pairs) -> dict[int, tuple[int, ...] | None]:
    """{layer: head indices, or None for every head}."""
    out: dict[int, tuple[int, ...] | None] = {}
    for layer, head in normalise(pairs):
        if head is ALL_HEADS:
            out[layer] = None
        elif layer not in out or out[layer] is not None:
            out[layer] = tuple(sorted({*(out.get(layer) or ()), head}))
    return out
