"""When to compute: the gates of the block cache, as pure functions of tensors.

Every decision is made per batch row (a sample of one conditioning stream), so a sample's image never depends on what
else shares its batch. Decisions stay on the device as boolean masks; `to_host` is the one place they are read back.
"""
from __future__ import annotations

import torch

from ..context import StepContext
from ..parallel.comm import agree_row_means
from .schedule import ScheduleWindow, planned_computes


def relative_change(current: torch.Tensor, previous: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-row mean |current - previous| / mean |previous|: (B, ...) -> (B,) in float32."""
    diff = (current.float() - previous.float()).abs().flatten(1).mean(1)
    ref = previous.float().abs().flatten(1).mean(1)
    # Under sequence parallelism each rank holds a shard of the tokens: every rank decides from the whole image.
    diff, ref = agree_row_means(diff, ref, count=current.flatten(1).shape[1])
    return diff / ref.clamp_min(eps)


def to_host(mask: torch.Tensor) -> list[bool]:
    """The host sync of a decision: one small device-to-host copy per decision point."""
    return mask.tolist()


def accumulated_change_gate(accumulated: torch.Tensor, change: torch.Tensor, threshold: float,
                            consecutive: torch.Tensor, max_consecutive: int,
                            have_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual-change gate (first-block gate and E-DiT-style block gate share it).

    Adds `change` to each row's running total; a row may reuse while that total stays under `threshold`, it has a
    cache, and it has not reused `max_consecutive` times in a row. Returns (reuse mask, new accumulated); rows that
    compute start accumulating afresh.
    """
    total = accumulated + change
    reuse = (total < threshold) & have_cache & (consecutive < max_consecutive)
    return reuse, torch.where(reuse, total, torch.zeros_like(total))


def static_gate(ctx: StepContext, interval: int, window: ScheduleWindow, rows: int, device) -> torch.Tensor:
    """Reuse on every step the fixed-budget plan does not compute (see `planned_computes`); all rows alike."""
    reuse = ctx.total_steps > 0 and ctx.step not in planned_computes(ctx.total_steps, interval, window)
    return torch.full((rows,), reuse, dtype=torch.bool, device=device)
