"""Shared fixtures for the ComfyUI-free tests."""
from __future__ import annotations

import pytest
import torch

from dit_accel.kernels.logs import forget_warnings

from dit_accel.reference.wan_dit import WanConfig, WanDiT


@pytest.fixture(autouse=True)
def _fresh_preset_warnings():
    """Every test sees the presets' once-per-family fallback warnings afresh (accel/presets.py)."""
    forget_warnings("preset-fallback:")


@pytest.fixture
def tiny_wan() -> WanDiT:
    """A 3-block Wan-format model with random weights (non-zero head, so outputs depend on every block)."""
    torch.manual_seed(0)
    model = WanDiT(WanConfig(num_layers=3, ffn_dim=256)).eval().requires_grad_(False)
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return model
