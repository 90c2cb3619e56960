"""Forecasting the model output, and the forecast methods on the caching engine: exact settings, what is skipped,
memory reported and freed, clear errors."""
import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.caching import BlockCacheConfig, BlockCachePatch
from dit_accel.accel.caching.predictors import TaylorResidual
from dit_accel.accel.context import locate_step
from dit_accel.accel.forecasting.methods import METHODS, ForecastSettings
from dit_accel.accel.forecasting.output_forecast import OutputForecastConfig, OutputForecastPatch
from dit_accel.accel.caching.predictors import ForecastConfig
from dit_accel.accel.host import AccelHost
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule


@pytest.mark.parametrize("method", METHODS)
def test_computing_every_step_equals_the_unpatched_model(tiny_wan, method, sample):
    expected, _, _ = sample(tiny_wan)
    settings = ForecastSettings(method, interval=1, threshold=0.0)
    out, summary, _ = sample(tiny_wan, [settings.patch()])
    assert torch.equal(out, expected)
    assert summary and "outputs equal the unpatched model" in summary[0]


def test_output_forecast_skips_whole_calls_and_counts_them(tiny_wan, sample):
    patch = OutputForecastPatch(OutputForecastConfig(ForecastConfig("taylor", order=1), interval=5), label="t")
    expected, _, _ = sample(tiny_wan, steps=20)
    out, summary, run = sample(tiny_wan, [patch], steps=20)
    assert "ran 5/20 model calls" in summary[0] and "4.00x" in summary[0]
    assert run.ledger.blocks_total == 20 * 3 and run.ledger.blocks_run == 5 * 3
    assert not torch.equal(out, expected) and torch.isfinite(out).all()
    # Memory was reported and freed at the end of the run: one output per stream, two Taylor terms each.
    per_stream = 2 * 2 * 16 * 8 * 8 * 4  # two Taylor terms x two rows (labels) x latent x float32
    per_row = 4 + 4  # each row's last computed time (float32) and its count of computes (int32)
    assert f"({2 * per_stream + 2 * 2 * per_row} bytes)" in summary[0]
    assert run.metrics["forecast_bytes"] == 2 * per_stream + 2 * 2 * per_row and not run.states


def test_order_zero_equals_plain_reuse_of_the_output(tiny_wan, sample):
    """Order 0 emits the last computed output: the same as a hand-written cache of the model output."""
    plan = {0, 5, 10, 14, 19}
    cache = {}

    def reuse(x, t, c, o):
        step, _ = locate_step(float(o["sigmas"][0]), o["sample_sigmas"])
        if step in plan:
            cache["out"] = tiny_wan(x, t, c, o)
        return cache["out"]

    expected, _, _ = sample(tiny_wan, steps=20, model_fn=reuse)
    patch = OutputForecastPatch(OutputForecastConfig(ForecastConfig("taylor", order=0), interval=5))
    out, _, _ = sample(tiny_wan, [patch], steps=20)
    assert torch.equal(out, expected)


def test_order_zero_on_the_stack_equals_the_block_cache_reuse(tiny_wan, sample):
    plain = BlockCachePatch(BlockCacheConfig(gate="static", interval=3, forecast_order=0))
    via_forecast = BlockCachePatch(BlockCacheConfig(gate="static", interval=3,
                                                    forecast=ForecastConfig("taylor", order=0)))
    expected, _, _ = sample(tiny_wan, [plain])
    out, _, _ = sample(tiny_wan, [via_forecast])
    assert torch.equal(out, expected)


def test_taylor_forecast_is_closer_to_full_compute_than_reuse_on_the_trained_model():
    """On the trained reference model (random weights have no smooth trajectory to forecast)."""
    from dit_accel.reference.assets import load_model
    model = load_model()
    noise = torch.randn(2, 16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    cond, uncond = label_context([3, 7]), label_context([UNCONDITIONAL] * 2)
    sigmas = simple_schedule(20)
    full = sample_euler_cfg(lambda x, t, c, o: model(x, t, c, o), noise, cond, uncond, sigmas, 4.0)
    errors = {}
    for order in (0, 1):
        patch = OutputForecastPatch(OutputForecastConfig(ForecastConfig("taylor", order=order), interval=5))
        with accelerated(AccelHost(adapter_for(model), (patch,)), model) as (fn, _, _):
            out = sample_euler_cfg(fn, noise, cond, uncond, sigmas, 4.0)
        errors[order] = (out - full).pow(2).mean()
    assert errors[1] < errors[0]


@pytest.mark.parametrize("granularity", ["model", "stack", "block"])
@pytest.mark.parametrize("method", METHODS)
def test_short_schedules_are_not_forecast_and_say_so(tiny_wan, sample, method, granularity):
    """Every method at every granularity (stack / block forecast on the caching engine) refuses a 6-step schedule,
    which is long enough for caching's warm-up and final step to leave steps to reuse."""
    expected, _, _ = sample(tiny_wan, steps=6)
    settings = ForecastSettings(method, interval=3, threshold=10.0, granularity=granularity)
    out, summary, _ = sample(tiny_wan, [settings.patch()], steps=6)
    assert torch.equal(out, expected)
    assert "too short to forecast" in summary[0], summary


def test_a_list_output_is_forecast_part_by_part():
    """LTX-2 returns [video, audio]: forecasts come back as such a list, each part exactly what forecasting that
    part alone gives."""
    from dit_accel.accel.context import StepContext
    from dit_accel.accel.caching.schedule import schedule_time
    from dit_accel.accel.patch import ModelCall
    from dit_accel.accel.state import RunState
    video, audio = torch.randn(2, 4, 1, 3, 3), torch.randn(2, 6, 5)

    def truth(t):
        return [video * t ** 2 + 1.0, audio * (1 - t)]

    def run_through(pick):
        patch = OutputForecastPatch(OutputForecastConfig(ForecastConfig("taylor", order=1), interval=4,
                                                         memory_gib=0))
        run, steps, outs, forecast = RunState(), 12, [], 0
        for step in range(steps):
            ctx = StepContext.single(step, steps, 1.0 - step / steps, 2)
            ran = []
            outs.append(patch.around_model(run, ctx, ModelCall(torch.zeros(2, 4, 1, 3, 3), 3),
                                           lambda: ran.append(step) or pick(truth(schedule_time(ctx)))))
            forecast += not ran
        assert forecast > 0
        return outs

    both = run_through(lambda parts: parts)
    alone = [run_through(lambda parts, i=i: parts[i]) for i in range(2)]
    for step, out in enumerate(both):
        assert isinstance(out, list) and [o.shape for o in out] == [video.shape, audio.shape]
        assert all(torch.equal(out[i], alone[i][step]) for i in range(2)), step



def test_output_layout_round_trips_and_refuses_mismatched_batches():
    from dit_accel.accel.forecasting.output_layout import OutputLayout
    parts = [torch.randn(2, 3, 4), torch.randn(2, 5).half()]
    layout = OutputLayout.of(parts)
    back = layout.unpack(layout.pack(parts))
    assert isinstance(back, list) and all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(back, parts))
    tensor = torch.randn(2, 3)
    assert OutputLayout.of(tensor).unpack(OutputLayout.of(tensor).pack(tensor)) is tensor
    with pytest.raises(ValueError, match="batch"):
        OutputLayout.of([torch.zeros(2, 3), torch.zeros(3, 3)])



def test_cg_taylor_skips_something_at_a_loose_threshold(tiny_wan, sample):
    out, summary, run = sample(tiny_wan, [ForecastSettings("cg-taylor", interval=4, threshold=10.0).patch()],
                                steps=20)
    assert run.ledger.blocks_run < run.ledger.blocks_total
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("steps, interval", [(20, 5), (30, 5)])
def test_planned_gate_runs_the_plan_at_the_even_schedules_budget(tiny_wan, steps, interval, sample):
    from dit_accel.accel.caching.schedule import ScheduleWindow, planned_computes
    from dit_accel.accel.caching.schedule import error_weighted_plan
    even = planned_computes(steps, interval, ScheduleWindow())
    patch, computed = ForecastSettings("spectrum-plan", interval=interval).patch(), []
    around = patch.around_model
    patch.around_model = lambda run, ctx, call, run_model: around(
        run, ctx, call, lambda: (computed.append(ctx.step), run_model())[1])
    _, summary, _ = sample(tiny_wan, [patch], steps=steps)
    # the final step is the plan's to drop only with few computes (OutputForecastConfig.free_final_budget)
    forced = {0} if len(even) <= OutputForecastConfig().free_final_budget else {0, steps - 1}
    plan = sorted(error_weighted_plan(tuple(simple_schedule(steps).tolist()), len(even), frozenset(forced)))
    assert computed == plan and (steps - 1 in plan) == (steps - 1 in forced)
    assert f"ran {len(even)}/{steps} model calls" in summary[0]
    assert plan != sorted(even)  # the plan moves computes: otherwise this test would not tell the gates apart


def test_block_cache_and_forecast_cannot_both_skip(tiny_wan):
    host = AccelHost(adapter_for(tiny_wan), (BlockCachePatch(),))
    with pytest.raises(ValueError, match="skip twice"):
        host.with_patch(ForecastSettings().patch())


@pytest.mark.parametrize("bad", [dict(method="lesa"), dict(granularity="head")])
def test_bad_settings_raise(bad):
    with pytest.raises(ValueError):
        ForecastSettings(**bad)


@pytest.mark.parametrize("bad", [dict(interval=0), dict(weight_power=-1.0), dict(gate="often"), dict(free_final_budget=-1),
                                 dict(start_percent=0.8, end_percent=0.2)])
def test_bad_output_forecast_settings_raise(bad):
    with pytest.raises(ValueError):
        OutputForecastConfig(**bad)
