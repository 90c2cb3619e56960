"""Block cache on the pure-torch Wan model: exact when off, per-row decisions, state kept apart, clear errors."""
import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.caching import BlockCacheConfig, BlockCachePatch
from dit_accel.accel.caching.gates import GATES, accumulated_change_gate, relative_change
from dit_accel.accel.caching.schedule import ScheduleWindow
from dit_accel.accel.context import StepContext
from dit_accel.accel.host import AccelHost
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule

ALL_GATES = [BlockCacheConfig(threshold=0.3), BlockCacheConfig(threshold=0.3, granularity="block"),
             BlockCacheConfig(gate="block", threshold=0.3), BlockCacheConfig(gate="static", interval=2),
             BlockCacheConfig(gate="static", interval=3, granularity="block")]


def _sample(model, patch=None, labels=(1, 2, 3), steps=8, cfg=4.0, noise=None):
    if noise is None:
        noise = torch.randn(len(labels), 16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cond, uncond = label_context(list(labels)), label_context([UNCONDITIONAL] * len(labels))
    if patch is None:
        return sample_euler_cfg(lambda x, t, c, o: model(x, t, c, o), noise, cond, uncond, simple_schedule(steps), cfg), []
    host = AccelHost(adapter_for(model), (patch,))
    with accelerated(host, model) as (fn, run, summary):
        out = sample_euler_cfg(fn, noise, cond, uncond, simple_schedule(steps), cfg)
    return out, summary


OFF_SETTINGS = [BlockCacheConfig(threshold=0), BlockCacheConfig(gate="cg", threshold=0),
                BlockCacheConfig(gate="block", threshold=0), BlockCacheConfig(gate="static", interval=1)]


def test_every_registered_gate_has_an_off_setting_under_test():
    assert sorted(c.gate for c in OFF_SETTINGS) == sorted(GATES) and all(c.off for c in OFF_SETTINGS)


@pytest.mark.parametrize("config", OFF_SETTINGS, ids=lambda c: c.gate)
def test_off_settings_are_bit_identical(tiny_wan, config):
    expected, _ = _sample(tiny_wan)
    out, summary = _sample(tiny_wan, BlockCachePatch(config))
    assert torch.equal(out, expected)
    assert "outputs equal the unpatched model" in summary[0]


@pytest.mark.parametrize("config", ALL_GATES, ids=lambda c: f"{c.gate}-{c.granularity}")
def test_every_gate_skips_work_and_stays_close(tiny_wan, config):
    expected, _ = _sample(tiny_wan)
    out, summary = _sample(tiny_wan, BlockCachePatch(config))
    speedup = float(summary[0].split("evaluations, ")[1].split("x")[0])
    assert speedup > 1.2
    assert not torch.equal(out, expected)
    assert (out - expected).abs().max() < 0.5 * expected.abs().max()


@pytest.mark.parametrize("config", ALL_GATES, ids=lambda c: f"{c.gate}-{c.granularity}")
def test_a_sample_does_not_depend_on_its_batch(tiny_wan, config):
    noise = torch.randn(3, 16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    together, _ = _sample(tiny_wan, BlockCachePatch(config), labels=(1, 2, 3), noise=noise)
    alone, _ = _sample(tiny_wan, BlockCachePatch(config), labels=(2,), noise=noise[1:2])
    torch.testing.assert_close(together[1:2], alone, rtol=1e-4, atol=1e-5)


def test_state_does_not_leak_between_runs(tiny_wan):
    patch = BlockCachePatch(BlockCacheConfig(threshold=0.3))
    first, _ = _sample(tiny_wan, patch)
    other, _ = _sample(tiny_wan, patch, labels=(7, 7, 7))
    again, _ = _sample(tiny_wan, patch)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_resolution_change_within_a_run_resets_stream_state(tiny_wan):
    """Two model sizes through one host run: the second starts from a fresh cache instead of crashing."""
    patch = BlockCachePatch(BlockCacheConfig(threshold=10.0, max_consecutive=10))
    host = AccelHost(adapter_for(tiny_wan), (patch,))
    with accelerated(host, tiny_wan) as (fn, run, summary):
        for size in (8, 12):
            noise = torch.randn(1, 16, 1, size, size, generator=torch.Generator().manual_seed(0))
            out = sample_euler_cfg(fn, noise, label_context([1]), label_context([UNCONDITIONAL]),
                                   simple_schedule(4), 4.0)
            assert out.shape[-1] == size and torch.isfinite(out).all()


def test_short_schedule_says_so(tiny_wan):
    _, summary = _sample(tiny_wan, BlockCachePatch(BlockCacheConfig(threshold=0.5)), steps=2)
    assert "too short to cache" in summary[0] and "nothing was skipped" in summary[0]


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": -1}, "threshold must be >= 0"),
    ({"start_percent": 0.8, "end_percent": 0.2}, "start_percent below end_percent"),
    ({"gate": "teacache"}, "gate must be one of"),
    ({"granularity": "layer"}, "granularity must be one of"),
])
def test_bad_settings_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BlockCacheConfig(**kwargs)


def test_gate_is_a_pure_function_of_tensors():
    acc = torch.tensor([0.0, 0.05, 0.0])
    change = torch.tensor([0.02, 0.08, 0.5])
    reuse, new_acc = accumulated_change_gate(acc, change, 0.1, torch.zeros(3, dtype=torch.int32), 2,
                                             torch.tensor([True, True, True]))
    assert reuse.tolist() == [True, False, False]
    assert new_acc.tolist() == pytest.approx([0.02, 0.0, 0.0])
    assert relative_change(torch.ones(2, 3) * 1.1, torch.ones(2, 3)).tolist() == pytest.approx([0.1, 0.1])


def test_schedule_window():
    w = ScheduleWindow(start_percent=0.2, end_percent=0.8, warmup_steps=1, final_steps=1)
    allowed = [w.allows_reuse(StepContext.single(s, 10, 0.5, 1)) for s in range(10)]
    assert allowed == [False, False, True, True, True, True, True, True, False, False]
    assert not w.allows_reuse(StepContext.single(-1, 0, 0.5, 1))  # unknown schedule: always compute


def test_presets_fall_back_to_the_measured_family_with_a_warning(caplog):
    from dit_accel.accel.caching import preset
    with caplog.at_level("WARNING", logger="dit_accel"):
        assert preset("flux", "balanced") == preset("wan", "balanced")
    assert any("no block-cache preset measured for 'flux'" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="speed must be one of"):
        preset("wan", "turbo")
