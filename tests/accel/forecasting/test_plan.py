"""The compute plan of spectrum-plan: budget, forced steps, and what the error model prefers."""
import pytest

from dit_accel.accel.caching.gates import ScheduleWindow, planned_computes
from dit_accel.accel.forecasting.plan import compute_budget, error_weighted_plan
from dit_accel.reference.sampling import simple_schedule


def _brute_force(schedule, computes, forced, weight_power=0.5):
    """Every placement of the computes, scored with the plan's own error model: the DP must find the minimum."""
    import itertools
    steps = len(schedule) - 1

    def cost(chosen):
        last, total = 0, 0.0
        for i in range(steps):
            if i in chosen:
                last = i
            else:
                total += abs(schedule[i] - schedule[i + 1]) ** weight_power * (i - last) ** 2
        return total

    options = [frozenset((0, *c)) for c in itertools.combinations(range(1, steps), computes - 1)
               if forced <= frozenset((0, *c))]
    return min(cost(c) for c in options), cost


@pytest.mark.parametrize("steps,computes", [(8, 3), (10, 4), (12, 5)])
@pytest.mark.parametrize("forced", [frozenset(), frozenset({5})])
def test_plan_is_the_minimum_of_its_error_model(steps, computes, forced):
    schedule = tuple(simple_schedule(steps).tolist())
    plan = error_weighted_plan(schedule, computes, forced)
    best, cost = _brute_force(schedule, computes, forced | {0})
    assert len(plan) == computes and 0 in plan and forced <= plan
    assert cost(plan) == pytest.approx(best)


@pytest.mark.parametrize("steps,interval", [(20, 5), (20, 10), (30, 5), (50, 7)])
def test_budget_matches_the_even_schedule_with_its_final_step(steps, interval):
    assert compute_budget(steps, interval) == len(planned_computes(steps, interval, ScheduleWindow()))


def test_every_step_computes_when_the_budget_allows_it():
    schedule = tuple(simple_schedule(12).tolist())
    assert error_weighted_plan(schedule, compute_budget(12, 1)) == frozenset(range(12))


def test_more_forced_steps_than_budget_computes_exactly_the_forced_ones():
    schedule = tuple(simple_schedule(12).tolist())
    assert error_weighted_plan(schedule, 2, frozenset({3, 6, 9})) == frozenset({0, 3, 6, 9})


def test_a_flat_weighting_spreads_computes_evenly_and_drops_the_final_step():
    # weight_power 0 ignores sigma drops: only the distance to the last compute counts.
    schedule = tuple(simple_schedule(20).tolist())
    assert sorted(error_weighted_plan(schedule, 5, weight_power=0.0)) == [0, 4, 8, 12, 16]


def test_big_sigma_drops_pull_computes_towards_them():
    # Shift 8 puts most of the sigma drop in the last steps: weighting by it moves the computes later.
    schedule = tuple(simple_schedule(20).tolist())
    flat = sorted(error_weighted_plan(schedule, 5, weight_power=0.0))
    weighted = sorted(error_weighted_plan(schedule, 5, weight_power=1.0))
    assert all(w >= f for w, f in zip(weighted, flat)) and weighted != flat
