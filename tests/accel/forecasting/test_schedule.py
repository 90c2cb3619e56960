"""The fixed-budget plan: computes spread evenly, none of the forced steps missing, gaps never above the interval."""
import pytest

from dit_accel.accel.caching.gates import ScheduleWindow, planned_computes


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
