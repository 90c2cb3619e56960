"""When to compute: the gates of the block cache, as pure functions of tensors.

Every decision is made per batch row (a sample of one conditioning stream), so a sample's image never depends on what
else shares its batch. Decisions stay on the device as boolean masks; `to_host` is the one place they are read back.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..context import StepContext


def relative_change(current: torch.Tensor, previous: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-row mean |current - previous| / mean |previous|: (B, ...) -> (B,) in float32."""
    diff = (current.float() - previous.float()).abs().flatten(1).mean(1)
    return diff / previous.float().abs().flatten(1).mean(1).clamp_min(eps)


def to_host(mask: torch.Tensor) -> list[bool]:
    """The host sync of a decision: one small device-to-host copy per decision point."""
    return mask.tolist()


@dataclass(frozen=True)
class ScheduleWindow:
    """Which steps may reuse at all: inside [start, end) of the schedule, after warm-up, before the final steps."""

    start_percent: float = 0.0
    end_percent: float = 1.0
    warmup_steps: int = 1
    final_steps: int = 1

    def allows_reuse(self, ctx: StepContext) -> bool:
        if ctx.total_steps <= 0 or ctx.step < 0:
            return False  # no schedule known (a custom sampler): never guess, always compute
        if ctx.step < self.warmup_steps or ctx.step >= ctx.total_steps - self.final_steps:
            return False
        return self.start_percent <= ctx.percent < self.end_percent

    def reusable_steps(self, total_steps: int) -> int:
        """How many steps of a schedule may reuse at best (0: too short to gain anything), by `allows_reuse` itself."""
        return sum(self.allows_reuse(StepContext.single(step, total_steps, float("nan"), 1))
                   for step in range(total_steps))


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


def static_gate(ctx: StepContext, interval: int, rows: int, device) -> torch.Tensor:
    """Compute every `interval`-th step (counted from the first step), reuse in between; all rows alike."""
    reuse = interval > 1 and ctx.step % interval != 0
    return torch.full((rows,), reuse, dtype=torch.bool, device=device)
