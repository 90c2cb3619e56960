"""The advanced `memory` input shared by the nodes that keep state between steps (their ladders differ)."""
from __future__ import annotations

from comfy_api.latest import io

from ..accel.memory import AUTO
from .compat import ADVANCED


def memory_budget_input(ladder: str) -> io.Float.Input:
    """`ladder`: what this node gives up, in order, when its state would exceed the budget."""
    return io.Float.Input("memory", default=AUTO, min=-1.0, max=1024.0, step=0.25, **ADVANCED,
                          tooltip="State budget in GiB for what this node keeps between steps. -1 (auto): 10 % of the "
                                  "GPU memory ComfyUI reports free at the run's first step, at most 1 GiB. 0: no limit "
                                  "(exactly the setting above; may run out of memory on video). Over budget it degrades "
                                  f"before allocating, in this order: {ladder}; its log line says what it did.")
