"""When a skipping method may skip at all, which steps a fixed budget computes, and the time forecasts are made on.

  * `ScheduleWindow`: the steps that may reuse (inside [start, end) of the schedule, after warm-up, before the final
    steps, and only on schedules long enough to fit a forecast);
  * plans of a fixed compute budget: spread evenly (`planned_computes`, TaylorSeer's and Spectrum's every-N-th step)
    or placed by a forecast-error model over the sampler's own sigmas (`error_weighted_plan`, ours);
  * the time axis: the scheduler's own step time (`schedule_time`) or sigma.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from ..context import StepContext

TIME_AXES = ("sigma", "step")


@dataclass(frozen=True)
class ScheduleWindow:
    """Which steps may reuse at all: inside [start, end) of the schedule, after warm-up, before the final steps."""

    start_percent: float = 0.0
    end_percent: float = 1.0
    warmup_steps: int = 1
    final_steps: int = 1
    min_steps: int = 0  # shorter schedules never reuse (forecasts need enough computed steps to fit)

    def __post_init__(self):
        if not 0.0 <= self.start_percent <= self.end_percent <= 1.0:
            raise ValueError(f"need 0 <= start_percent <= end_percent <= 1, got start {self.start_percent}, "
                             f"end {self.end_percent}: set start_percent below end_percent")
        if self.warmup_steps < 0 or self.final_steps < 0 or self.min_steps < 0:
            raise ValueError("warmup_steps, final_steps and min_steps must be >= 0")

    @classmethod
    def of(cls, config) -> "ScheduleWindow":
        """The window of a method's config (any dataclass with these five fields)."""
        return cls(config.start_percent, config.end_percent, config.warmup_steps, config.final_steps, config.min_steps)

    def allows_reuse(self, ctx: StepContext) -> bool:
        if ctx.total_steps <= 0 or ctx.step < 0:
            return False  # no schedule known (a custom sampler): never guess, always compute
        if ctx.total_steps < self.min_steps:
            return False
        if ctx.step < self.warmup_steps or ctx.step >= ctx.total_steps - self.final_steps:
            return False
        return self.start_percent <= ctx.percent < self.end_percent

    def forced_computes(self, total_steps: int) -> list[int]:
        """The steps of a `total_steps` schedule that must compute, by `allows_reuse` itself, in order."""
        return [s for s in range(total_steps)
                if not self.allows_reuse(StepContext.single(s, total_steps, float("nan"), 1))]

    def reusable_steps(self, total_steps: int) -> int:
        """How many steps of a schedule may reuse at best (0: too short to gain anything)."""
        return total_steps - len(self.forced_computes(total_steps))

    def too_short(self, total_steps: int) -> bool:
        """A schedule on which nothing can be skipped: under `min_steps`, or fewer than 2 steps left to reuse."""
        return total_steps < self.min_steps or self.reusable_steps(total_steps) < 2


def too_short_note(window: ScheduleWindow, total_steps: int, verb: str) -> str:
    """The log line's clause for a schedule on which nothing could be skipped (`verb`: "cache", "forecast")."""
    if total_steps < window.min_steps:
        why = f"it needs {window.min_steps} or more"
    else:
        why = f"warm-up and final steps leave {window.reusable_steps(total_steps)} step(s) to reuse"
    return (f". The {total_steps}-step schedule is too short to {verb} ({why}): nothing was skipped. For few-step "
            "(distilled) models use sparse attention or quantized weights instead.")


# When to compute on a fixed budget. TaylorSeer and Spectrum compute every N-th step; anchoring that at the first step
# leaves the last stretch uneven (20 steps every 6: computes at 0, 6, 12, 18 and the final step 19 back to back), so
# the computes are spread evenly between the steps that must be computed (warm-up, final steps, outside the start/end
# window) with no gap longer than `interval` steps.

@lru_cache(maxsize=64)
def planned_computes(total_steps: int, interval: int, window: ScheduleWindow) -> frozenset[int]:
    """The steps of a `total_steps` schedule that run the model; the others are forecast."""
    if interval <= 1:
        return frozenset(range(total_steps))
    forced = window.forced_computes(total_steps)
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


# Where to spend the same budget over a sigma schedule (the plan of our combined method, "spectrum-plan"). A forecast
# `h` steps after the last compute errs by about h**2 (first-order extrapolation), and that error moves the sample by
# the step's sigma drop. The plan minimises
#
#     sum over forecast steps i of  drop_i ** weight_power * h_i ** error_power
#
# by dynamic programming over the schedule the sampler actually runs (any scheduler, any length), with the steps the
# user forces (warm-up, final steps, outside start/end) always computed. `weight_power` 0.5 was the best of 0 / 0.25 /
# 0.5 / 0.75 / 1 on the reference model (20 steps: +1.1 dB at 4x, +6 dB at 6.7x over the even schedule; on 30 steps
# it lost 1.2 dB at 4.3x and tied at 6x, see the README), so it is a knob, not a law.

def compute_budget(total_steps: int, interval: int) -> int:
    """The computes an even every-`interval`-steps schedule spends (first and last step included): the plan gets
    exactly as many, so the two compare at equal compute."""
    if total_steps <= 0:
        return 0
    return min(total_steps, 1 + math.ceil((total_steps - 1) / max(1, interval)))


@lru_cache(maxsize=64)
def error_weighted_plan(schedule: tuple[float, ...], computes: int, forced: frozenset[int] = frozenset({0}),
                        error_power: float = 2.0, weight_power: float = 0.5) -> frozenset[int]:
    """The `computes` steps of `schedule` (sigmas, one more than steps) that minimise the forecast error model above;
    every step in `forced` (and step 0: nothing to forecast from) is among them."""
    steps = len(schedule) - 1
    forced = frozenset(s for s in forced | {0} if 0 <= s < steps)
    if computes >= steps:
        return frozenset(range(steps))
    computes = max(computes, len(forced))
    weight = [abs(schedule[i] - schedule[i + 1]) ** weight_power for i in range(steps)]

    def gap_cost(last: int, nxt: int) -> float:  # compute at `last`, the next at `nxt` (or past the end)
        return sum(weight[i] * (i - last) ** error_power for i in range(last + 1, nxt))

    # best[(last, left)] = (cost of steps after `last`, the computes after it), given `left` computes still to place
    # after `last`; a forced step can never be jumped over.
    next_forced = [min((f for f in forced if f > s), default=steps) for s in range(steps)]

    @lru_cache(maxsize=None)
    def best(last: int, left: int) -> tuple[float, tuple[int, ...]]:
        if left == 0:
            return (gap_cost(last, steps), ()) if next_forced[last] == steps else (math.inf, ())
        options = []
        for nxt in range(last + 1, min(next_forced[last], steps - left) + 1):
            cost, rest = best(nxt, left - 1)
            options.append((gap_cost(last, nxt) + cost, (nxt, *rest)))
        return min(options, default=(math.inf, ()))

    cost, rest = best(0, computes - 1)
    if math.isinf(cost):  # more forced steps than the budget allows: compute exactly the forced ones
        return forced
    return frozenset((0, *rest))


def schedule_time(ctx: StepContext) -> float:
    """The scheduler's own time, 1 -> 0 like sigma. Forecasts are smoothest on it: with a shifted schedule the last
    steps carry most of the sigma drop, while features move evenly in steps (accel/caching/presets.py). Without a
    known schedule (a custom sampler) it is sigma."""
    return 1.0 - ctx.percent if ctx.total_steps > 0 else ctx.sigma


def forecast_time(ctx: StepContext, axis: str) -> float:
    """The time on `axis` ("step": `schedule_time`, or "sigma") that predictors are fed and asked at."""
    return schedule_time(ctx) if axis == "step" else ctx.sigma
