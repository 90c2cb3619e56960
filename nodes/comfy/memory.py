"""What ComfyUI reports about free device memory, handed to the run's state for the methods' memory budgets.

Read at the run's first model call (the DIFFUSION_MODEL wrapper), when the model is loaded and the forward's own
activations are not yet allocated: `comfy.model_management.get_free_memory(device)` counts the device's free memory
plus what torch holds reserved but unused. Methods take 10 % of it, at most 1 GiB, as their default state budget
(`accel/memory.py`). On the CPU nothing is read (the budget is then 1 GiB).
"""
from __future__ import annotations

import torch

import comfy.model_management

from ...accel.host import RUN_KEY


def free_bytes(device: torch.device) -> int | None:
    if device.type == "cpu":
        return None
    try:
        return int(comfy.model_management.get_free_memory(device))
    except Exception:  # noqa: BLE001 - a backend ComfyUI cannot query: the budget falls back to its cap
        return None


def record_free_memory(transformer_options: dict | None, x) -> None:
    """Once per run: what is free now, on the device of the model's input."""
    run = (transformer_options or {}).get(RUN_KEY)
    x = x[0] if isinstance(x, (list, tuple)) else x
    if run is not None and run.free_memory is None and isinstance(x, torch.Tensor):
        run.free_memory = free_bytes(x.device)
