"""Sparse attention: mask policies that decide which key blocks each query block visits, and the patch using them."""
from .blocks import Budget, Grid
from .config import SparseAttentionConfig, parse_layers
from .patch import SparseAttentionPatch
from .policies import POLICIES, make_policy
from .presets import LEVELS, preset

__all__ = ["Budget", "Grid", "LEVELS", "POLICIES", "SparseAttentionConfig", "SparseAttentionPatch", "make_policy",
           "parse_layers", "preset"]
