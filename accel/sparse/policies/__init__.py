"""Mask policies by name: each decides which key blocks every query block visits (never computes attention)."""
from . import cluster, dense, draft, grat, pisa, sol, window  # noqa: F401  (each registers itself)
from .base import POLICIES, MaskPolicy, PolicyInput, PolicyParams, Selection, make_policy, register_policy

__all__ = ["POLICIES", "MaskPolicy", "PolicyInput", "PolicyParams", "Selection", "make_policy", "register_policy"]
