"""Memory accounting and budgets: state counted from the method's own tensors, planned before the run allocates."""
import dataclasses

import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.caching import BlockCacheConfig, BlockCachePatch, preset
from dit_accel.accel.host import AccelHost
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule
from dit_accel.accel.forecasting.output_forecast import OutputForecastConfig, OutputForecastPatch
from dit_accel.accel.caching.predictors import ForecastConfig
from dit_accel.accel.memory import GiB, MemoryBudget, StateShape, _simulate_reduced, simulate, state_nbytes
from dit_accel.bench.shapes.measure import CONSUMER_FREE
from dit_accel.bench.shapes.methods import NODE_DEFAULTS, build
from dit_accel.bench.shapes.table import SHAPES


def sample_with(model, patches=(), steps=12):
    """(output, log lines, run) of two labels under CFG 4 on an 8 x 8 latent (16 tokens, 4 rows per call)."""
    noise = torch.randn(2, 16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cond, uncond = label_context([1, 2]), label_context([UNCONDITIONAL] * 2)
    if not patches:
        return sample_euler_cfg(lambda x, t, c, o: model(x, t, c, o), noise, cond, uncond, simple_schedule(steps),
                                4.0), [], None
    with accelerated(AccelHost(adapter_for(model), tuple(patches)), model) as (fn, run, summary):
        out = sample_euler_cfg(fn, noise, cond, uncond, simple_schedule(steps), 4.0)
    return out, summary, run


def test_state_nbytes_counts_each_storage_once_and_follows_containers():
    a = torch.zeros(4, 8)
    state = {"x": a, "view": a[1:], "more": [torch.zeros(3, dtype=torch.bfloat16)], "n": 3}
    assert state_nbytes(state) == 4 * 8 * 4 + 3 * 2


def test_the_auto_budget_is_a_tenth_of_free_memory_capped_at_1_gib():
    assert MemoryBudget.resolve(-1, 4 * GiB).limit == int(0.4 * GiB)
    assert MemoryBudget.resolve(-1, 80 * GiB).limit == GiB
    assert MemoryBudget.resolve(-1, None).limit == GiB
    assert MemoryBudget.resolve(0, 1).limit is None and MemoryBudget.resolve(2, None).limit == 2 * GiB


@pytest.mark.parametrize("patch", [
    BlockCachePatch(dataclasses.replace(preset("wan", "balanced"), memory_gib=0)),          # per block, block gate
    BlockCachePatch(BlockCacheConfig(gate="first_block", threshold=0.3, memory_gib=0)),      # stack
    OutputForecastPatch(OutputForecastConfig(ForecastConfig("spectral_taylor", order=1, degree=4, window=6),
                                             interval=3, memory_gib=0)),
], ids=["blockcache", "firstblock-stack", "spectrum-output"])
def test_planned_state_equals_what_a_real_run_holds(tiny_wan, patch):
    """The plan (the method's hooks at a few tokens, extrapolated) against the same method really sampling."""
    _, _, run = sample_with(tiny_wan, [patch], steps=12)
    held = run.metrics["state_bytes"]
    rows, width = 4, tiny_wan.cfg.dim  # two labels x CFG; 8 x 8 latent -> 16 tokens
    shape = StateShape((("img", (rows, 16, width)),), torch.float32,
                       tuple(("block", ("img",)) for _ in range(tiny_wan.num_blocks)), (rows, 16, 1, 8, 8),
                       ((0, 2), (2, 4)))
    # What the run holds at its end (the plan's peak also counts the stack's input held during a call).
    assert 0 < held <= simulate(patch, shape, 12)[0]
    if patch.config.gate != "first_block":
        assert simulate(patch, shape, 12)[0] == held


def test_extrapolated_bytes_equal_a_run_at_the_full_token_count():
    shape = dataclasses.replace(SHAPES["flux-dev-1024"], latent=(16, 1, 16, 32)).state_shape()  # 128 + 256 tokens
    patch = BlockCachePatch(dataclasses.replace(preset("wan", "balanced"), memory_gib=0))
    full = {axis: shape.full_count(axis) for axis in shape.token_axes}
    assert simulate(patch, shape, 8) == _simulate_reduced(patch, shape, full, 8, None)


def test_planning_a_shape_with_no_common_token_divisor_stays_small(monkeypatch):
    """Qwen-Image at 1328 px: 83 x 83 image tokens beside the prompt's. The plan runs at a few tokens per stream (it
    once simulated at the full count, holding gigabytes of host memory to plan a 1 GiB budget)."""
    import dit_accel.accel.memory as memory
    shape = SHAPES["qwen-image-1328"].state_shape()
    seen = []
    real = memory._simulate_reduced
    monkeypatch.setattr(memory, "_simulate_reduced", lambda patch, shp, counts, *a: seen.append(counts) or
                        real(patch, dataclasses.replace(shp, layout=shp.layout[:2]), counts, *a))
    simulate(BlockCachePatch(dataclasses.replace(preset("wan", "balanced"), memory_gib=0)), shape, 8)
    assert seen and all(max(counts.values(), default=1) <= 2 for counts in seen)


# HunyuanVideo 720p fits only through the last-kind span rung (its two block kinds keep per-block residuals otherwise).
@pytest.mark.parametrize("shape", ["wan-14b-480p-81f", "flux-dev-1024", "hunyuan-video-720p-129f"])
@pytest.mark.parametrize("method", NODE_DEFAULTS)
def test_node_defaults_fit_a_24_gb_card_holding_wan_14b(shape, method):
    """Within the default budget (at most 1 GiB) through the method's own accounting, and still on."""
    patch = build(method, SHAPES[shape])
    fit = patch.memory_fit(SHAPES[shape].state_shape(), CONSUMER_FREE, 50, torch.device("cuda"))
    assert fit.budget.limit <= GiB and fit.fits and fit.device_bytes <= fit.budget.limit
    assert not any(step.endswith(" off") for step in fit.steps)


def test_no_limit_runs_the_configured_setting_and_a_tiny_budget_degrades_in_order(tiny_wan):
    expected, _, _ = sample_with(tiny_wan, steps=12)
    exact, _, _ = sample_with(tiny_wan, [BlockCachePatch(dataclasses.replace(preset("wan", "balanced"),
                                                                             memory_gib=0))], steps=12)
    auto, log, _ = sample_with(tiny_wan, [BlockCachePatch(preset("wan", "balanced"))], steps=12)
    assert torch.equal(auto, exact) and "within its memory budget" in log[0]
    tiny, log, run = sample_with(tiny_wan, [BlockCachePatch(dataclasses.replace(preset("wan", "balanced"),
                                                                                memory_gib=1e-6))], steps=12)
    assert "static schedule on the block stack" in log[0] and "caching off" in log[0]
    assert torch.equal(tiny, expected)  # nothing fits: off, never out of memory
    assert run is not None


def test_stored_history_keeps_bf16_and_forecasts_in_the_value_dtype():
    f = ForecastConfig("taylor", order=1, history_dtype=torch.bfloat16).build()
    on = torch.ones(2, dtype=torch.bool)
    f.update(on, torch.full((2, 3), 1.0), 1.0)
    f.update(on, torch.full((2, 3), 2.0), 0.5)
    out = f.predict(0.25)
    assert out.dtype == torch.float32 and torch.allclose(out, torch.full((2, 3), 2.5))
    assert f.nbytes == f.device_nbytes == 2 * 2 * 3 * 2


def test_a_plan_made_inside_a_parallel_run_stays_on_this_rank(monkeypatch):
    """Each process caches its plans, so ranks do not simulate in step: a gate inside the simulation must not reach
    for the other ranks (it waited in an all-reduce no other rank joined), and the run's state is back afterwards."""
    from dit_accel.accel.parallel import comm

    def no_collectives(*args, **kwargs):
        raise AssertionError("the simulation called a collective")

    monkeypatch.setattr(comm, "_GROUP", comm.ParallelGroup(rank=1, world=2, backend="gloo", timeout_s=1.0))
    monkeypatch.setattr(comm.dist, "all_reduce", no_collectives)
    shape = dataclasses.replace(SHAPES["flux-dev-1024"], latent=(16, 1, 8, 8)).state_shape()
    patch = BlockCachePatch(BlockCacheConfig(gate="first_block", threshold=0.3, memory_gib=0))
    comm.enter_run()
    try:
        assert comm.in_run()
        with pytest.raises(AssertionError, match="called a collective"):  # the gate does agree inside a run
            comm.agree_row_means(torch.ones(2), torch.ones(2), count=4)
        assert simulate(patch, shape, 8)[0] > 0
        assert comm.in_run()
    finally:
        comm.leave_run()


@pytest.mark.parametrize("method", ["cg-taylor", "taylorseer"])
def test_a_forecaster_its_budget_turns_off_keeps_nothing(tiny_wan, method):
    """The last rung ("forecasting off") must hold no state: CG-Taylor's probe once kept recording the first block's
    residual while off (1.5 GiB on the device at wan-14b-720p-81f, over the 1 GiB it had planned to fit)."""
    import dataclasses as dc
    from dit_accel.accel.forecasting.methods import ForecastSettings
    expected, _, _ = sample_with(tiny_wan, steps=12)
    patch = ForecastSettings(method, interval=3, warmup_steps=1).patch()
    patch.config = dc.replace(patch.config, memory_gib=1e-6)
    out, log, run = sample_with(tiny_wan, [patch], steps=12)
    assert "forecasting off" in log[0] and run.metrics["state_bytes"] == 0
    assert torch.equal(out, expected)
