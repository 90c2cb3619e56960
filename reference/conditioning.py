"""Digit-label conditioning: the reference model's "text" is one token, a one-hot label in Wan's 4096-wide text space.

Slot 10 is the unconditional ("no digit") label used for classifier-free guidance.
"""
from __future__ import annotations

import torch

from .digits import NUM_CLASSES

UNCONDITIONAL = NUM_CLASSES  # label index of the "no digit" token
CONTEXT_TOKENS = 1


def label_context(labels: torch.Tensor | list[int] | int, text_dim: int = 4096,
                  dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Labels (0–9, or 10 for unconditional) -> context (B, 1, text_dim)."""
    labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    if labels.numel() and (labels.min() < 0 or labels.max() > UNCONDITIONAL):
        raise ValueError(f"digit labels must be 0–{NUM_CLASSES - 1} or {UNCONDITIONAL} (unconditional), "
                         f"got {labels.tolist()}")
    context = torch.zeros(labels.shape[0], CONTEXT_TOKENS, text_dim, dtype=dtype, device=device)
    context[torch.arange(labels.shape[0], device=device), 0, labels] = 1.0
    return context
