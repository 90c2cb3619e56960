"""Sparse attention: mask policies that decide which key blocks each query block visits, and the patch using them."""
