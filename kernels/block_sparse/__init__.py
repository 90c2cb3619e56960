"""Block-sparse attention: a layout of key blocks per query block, a Triton kernel, and its torch reference.

Mask policies (in `accel/sparse/`) build a `BlockLayout` (and optionally a `SoftmaxCorrection`); this package only
computes attention from them.
"""
from ..capability import triton_available
from .dispatch import BACKENDS, block_sparse_attention, resolve_backend
from .layout import (BlockLayout, SoftmaxCorrection, dense_layout, layout_from_mask, layout_to_mask,
                     random_layout)
from .reference import block_sparse_attention_reference

__all__ = ["BACKENDS", "BlockLayout", "SoftmaxCorrection", "block_sparse_attention",
           "block_sparse_attention_reference", "dense_layout", "layout_from_mask", "layout_to_mask",
           "random_layout", "resolve_backend", "triton_available"]
