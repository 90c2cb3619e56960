"""Random LoRAs for the reference model in ComfyUI's key format (`diffusion_model.<layer>.lora_up/down.weight`), for
the tests and benchmarks that check a LoRA still takes effect on top of our patches and quantized weights."""
from __future__ import annotations

from typing import Iterable

import torch

# layer name inside a block -> (out_features, in_features) of the reference model (width 256, FFN 1024)
LAYER_SHAPES = {"self_attn.q": (256, 256), "self_attn.o": (256, 256), "ffn.0": (1024, 256)}


def random_lora(layers: Iterable[str] = ("ffn.0", "self_attn.o"), blocks: Iterable[int] = range(8), rank: int = 4,
                scale: float = 0.05, seed: int = 0) -> dict[str, torch.Tensor]:
    """A rank-`rank` LoRA with N(0, scale^2) factors on `layers` of `blocks` (deterministic in `seed`)."""
    gen = torch.Generator().manual_seed(seed)
    lora = {}
    for i in blocks:
        for layer in layers:
            out_f, in_f = LAYER_SHAPES[layer]
            key = f"diffusion_model.blocks.{i}.{layer}"
            lora[f"{key}.lora_down.weight"] = torch.randn(rank, in_f, generator=gen) * scale
            lora[f"{key}.lora_up.weight"] = torch.randn(out_f, rank, generator=gen) * scale
    return lora
