"""The schedule module: the fixed-budget plan (computes spread evenly, none of the forced steps missing, gaps never
above the interval) and the error-weighted plan of spectrum-plan (budget, forced steps, what the error model
prefers)."""
import pytest

from dit_accel.accel.caching.schedule import ScheduleWindow, compute_budget, error_weighted_plan, planned_computes
from dit_accel.reference.sampling import simple_schedule


@pytest.mark.parametrize("steps", [10, 20, 30, 50])
@pytest.mark.parametrize("interval", [2, 3, 5, 7, 10])
def test_gaps_stay_within_the_interval_and_forced_steps_compute(steps, interval):
    window = ScheduleWindow(0.0, 1.0, warmup_steps=1, final_steps=1)
    plan = sorted(planned_computes(steps, interval, window))
    assert plan[0] == 0 and plan[-1] == steps - 1
    assert max(b - a for a, b in zip(plan, plan[1:])) <= interval
    # Even spacing: the fewest computes that keep the gaps within the interval.
    assert len(plan) == -(-(steps - 1) // interval) + 1


def test_interval_one_computes_every_step_and_the_window_is_honoured():
    window = ScheduleWindow(0.2, 0.8, warmup_steps=1, final_steps=1)
    assert planned_computes(20, 1, window) == frozenset(range(20))
    plan = planned_computes(20, 5, window)
    assert {0, 1, 2, 3, 16, 17, 18, 19} <= plan  # outside [20 %, 80 %) every step computes


def test_twenty_steps_at_four_x():
    assert sorted(planned_computes(20, 5, ScheduleWindow())) == [0, 5, 10, 14, 19]


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
