"""The forecasting bench methods compare at equal compute for any number of steps."""
import pytest

from dit_accel.accel.caching.schedule import ScheduleWindow, planned_computes
from dit_accel.bench.methods_forecast import cg_interval_for, cg_speedup, even_speedup, interval_for


@pytest.mark.parametrize("steps, target, interval, speedup", [
    (20, 4.0, 5, 4.0), (20, 6.0, 10, 20 / 3), (50, 4.0, 4, 50 / 14), (50, 6.0, 7, 6.25)])
def test_the_interval_gives_the_speedup_nearest_the_target(steps, target, interval, speedup):
    assert interval_for(steps, target) == interval
    assert even_speedup(steps, interval) == pytest.approx(speedup)
    # the even schedule the forecasters run has exactly that many computes
    assert steps / len(planned_computes(steps, interval, ScheduleWindow())) == pytest.approx(speedup)


@pytest.mark.parametrize("steps, target", [(20, 4.0), (50, 4.0), (50, 6.0)])
def test_cg_taylor_gets_the_interval_nearest_the_others_speed_with_its_probes(steps, target):
    goal = even_speedup(steps, interval_for(steps, target))
    chosen = cg_speedup(steps, cg_interval_for(steps, target))
    assert all(abs(chosen - goal) <= abs(cg_speedup(steps, iv) - goal) for iv in range(1, steps + 1))
    # probes cost: at the same interval CG-Taylor is slower than the even schedule
    assert cg_speedup(steps, 5) < even_speedup(steps, 5)
