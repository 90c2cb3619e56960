"""When to compute: the gates of the block cache, as pure functions of tensors.

Every decision is made per batch row (a sample of one conditioning stream), so a sample's image never depends on what
else shares its batch. Decisions stay on the device as boolean masks; `to_host` is the one place they are read back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..context import StepContext
from ..parallel.comm import agree_row_means


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


@dataclass(frozen=True)
class ScheduleWindow:
    """Which steps may reuse at all: inside [start, end) of the schedule, after warm-up, before the final steps."""

    start_percent: float = 0.0
    end_percent: float = 1.0
    warmup_steps: int = 1
    final_steps: int = 1
    min_steps: int = 0  # shorter schedules never reuse (forecasts need enough computed steps to fit)

    def allows_reuse(self, ctx: StepContext) -> bool:
        if ctx.total_steps <= 0 or ctx.step < 0:
            return False  # no schedule known (a custom sampler): never guess, always compute
        if ctx.total_steps < self.min_steps:
            return False
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


def static_gate(ctx: StepContext, interval: int, window: ScheduleWindow, rows: int, device) -> torch.Tensor:
    """Reuse on every step the fixed-budget plan does not compute (see `planned_computes`); all rows alike."""
    reuse = ctx.total_steps > 0 and ctx.step not in planned_computes(ctx.total_steps, interval, window)
    return torch.full((rows,), reuse, dtype=torch.bool, device=device)


# When to compute on a fixed budget. TaylorSeer and Spectrum compute every N-th step; anchoring that at the first step
# leaves the last stretch uneven (20 steps every 6: computes at 0, 6, 12, 18 and the final step 19 back to back), so
# the computes are spread evenly between the steps that must be computed (warm-up, final steps, outside the start/end
# window) with no gap longer than `interval` steps.


@lru_cache(maxsize=64)
def planned_computes(total_steps: int, interval: int, window: ScheduleWindow) -> frozenset[int]:
    """The steps of a `total_steps` schedule that run the model; the others are forecast."""
    if interval <= 1:
        return frozenset(range(total_steps))
    forced = [s for s in range(total_steps)
              if not window.allows_reuse(StepContext.single(s, total_steps, float("nan"), 1))]
    if not forced or forced[0] != 0:
        forced = [0, *forced]  # the first step always computes: there is nothing to forecast from
    computes = set(forced)
    for left, right in zip(forced, forced[1:] + [total_steps]):
        # Between two forced computes (or the end), place the fewest computes that keep every gap <= interval.
        end = right if right < total_steps else total_steps - 1
        span = end - left
        if span <= interval:
            continue
        pieces = math.ceil(span / interval)
        computes.update(left + round(span * j / pieces) for j in range(1, pieces + (1 if right < total_steps else 0)))
    return frozenset(s for s in computes if 0 <= s < total_steps)
