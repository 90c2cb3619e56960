"""Where to spend a fixed number of model computes over a sigma schedule: the plan of our combined method.

TaylorSeer and Spectrum compute every N-th step. With the same number of computes, placing them by an error model
does better: a forecast `h` steps after the last compute errs by about h**2 (first-order extrapolation), and that
error moves the sample by the step's sigma drop. The plan minimises

    sum over forecast steps i of  drop_i ** weight_power * h_i ** error_power

by dynamic programming over the schedule the sampler actually runs (any scheduler, any length), with the steps the
user forces (warm-up, final steps, outside start/end) always computed. `weight_power` 0.5 was the best of 0 / 0.25 /
0.5 / 0.75 / 1 on the reference model (20 steps: +1.1 dB at 4x, +6 dB at 6.7x over the even schedule; on 30 steps
it lost 1.2 dB at 4.3x and tied at 6x, see the README), so it is a knob, not a law.
"""
from __future__ import annotations

import math
from functools import lru_cache


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
