"""The sparse-attention patch on the pure-torch Wan model: exact with the full mask, routes and sparsity counted,
warm-up and dense layers honoured, chained onto a prior attention override, nothing kept between runs."""
from __future__ import annotations

import logging

import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.host import RUN_KEY, AccelHost
from dit_accel.accel.sparse import SparseAttentionConfig, SparseAttentionPatch, parse_layers
from dit_accel.accel.sparse.patch import CROSS, LAYER, REFERENCE, WARMUP
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule

TINY = dict(block_size=4, warmup_steps=0)  # the tiny model has 16 image tokens: 4 blocks of 4


def _sample(model_fn, steps=3):
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 16, 1, 8, 8, generator=gen)
    return sample_euler_cfg(model_fn, noise, label_context([1, 2]), label_context([UNCONDITIONAL] * 2),
                            simple_schedule(steps), 4.0)


def _run(model, config, steps=3):
    patch = SparseAttentionPatch(config)
    with accelerated(AccelHost(adapter_for(model), (patch,)), model) as (fn, run, summary):
        out = _sample(fn, steps)
    return out, run, summary


def test_full_mask_equals_the_unpatched_model(tiny_wan):
    expected = _sample(lambda x, t, c, o: tiny_wan(x, t, c, o))
    out, run, summary = _run(tiny_wan, SparseAttentionConfig(policy="dense", sparsity=0.0, **TINY))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert f"{REFERENCE} 9" in summary[0] and f"{CROSS} 9" in summary[0]  # 3 steps x 3 blocks, each way
    assert run.metrics["attention_sparsity"] == pytest.approx(0.0, abs=1e-9)


def test_sparsity_is_counted_over_the_run_including_dense_warmup(tiny_wan):
    _, run, summary = _run(tiny_wan, SparseAttentionConfig(policy="pisa", sparsity=0.5, block_size=4,
                                                           warmup_steps=1))
    # Steps 1-2 skip 2 of 4 key blocks per query block; step 0 is dense: 2/3 x 1/2 of the work skipped.
    assert run.metrics["attention_sparsity"] == pytest.approx(1 / 3, abs=1e-6)
    assert f"{WARMUP} 3" in summary[0] and f"{REFERENCE} 6" in summary[0]


def test_dense_layers_stay_dense(tiny_wan):
    _, run, summary = _run(tiny_wan, SparseAttentionConfig(policy="pisa", dense_layers=(0, 2), **TINY))
    assert f"{LAYER} 6" in summary[0] and f"{REFERENCE} 3" in summary[0]


def test_chains_onto_a_prior_attention_override(tiny_wan):
    seen = []

    def prior(func, *args, **kwargs):
        seen.append(args[0].shape[1])
        return func(*args, **kwargs)

    to = {"optimized_attention_override": prior}
    expected = _sample(lambda x, t, c, o: tiny_wan(x, t, c, {**to, **o}), steps=1)
    prior_calls = len(seen)
    seen.clear()
    host = AccelHost(adapter_for(tiny_wan), (SparseAttentionPatch(SparseAttentionConfig(policy="dense", **TINY)),))
    host.install(to, tiny_wan)
    run = host.start_run()

    def fn(x, t, c, o):
        merged = {**to, **o, RUN_KEY: run}
        host.begin_call(merged, x)
        return tiny_wan(x, t, c, merged)

    out = _sample(fn, steps=1)
    host.end_run(run)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert len(seen) == prior_calls // 2  # cross-attention still goes through the prior; self-attention is ours


def test_runs_share_nothing(tiny_wan):
    config = SparseAttentionConfig(policy="cluster", sparsity=0.5, **TINY)
    first, run1, _ = _run(tiny_wan, config)
    second, run2, _ = _run(tiny_wan, config)
    assert torch.equal(first, second)
    assert run1.metrics == run2.metrics


def test_fallback_to_the_reference_path_warns_once(tiny_wan, caplog):
    from dit_accel.kernels.logs import forget_warnings
    forget_warnings("sparse-fallback:")
    with caplog.at_level(logging.WARNING, logger="dit_accel"):
        _, _, summary = _run(tiny_wan, SparseAttentionConfig(policy="pisa", **TINY))
    warnings = [r for r in caplog.records if "torch reference path" in r.getMessage()]
    if torch.cuda.is_available():
        pytest.skip("the kernel runs here")
    assert len(warnings) == 1
    assert "could not run" in summary[0]


def test_parse_layers_reads_lists_and_ranges():
    assert parse_layers("0, 1, 30-32") == (0, 1, 30, 31, 32)
    assert parse_layers("") == ()
    with pytest.raises(ValueError, match="0, 1, 30-39"):
        parse_layers("1;2")


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="available"):
        SparseAttentionConfig(policy="nope")
    with pytest.raises(ValueError, match="sparsity"):
        SparseAttentionConfig(sparsity=1.0)
    from dit_accel.accel.sparse.policies.sol import SolParams
    with pytest.raises(ValueError, match="PisaParams"):
        SparseAttentionConfig(policy="pisa", params=SolParams())


def test_estimate_cost_is_reported_beside_the_sparsity(tiny_wan):
    from dit_accel.accel.sparse.policies.pisa import PisaParams
    _, pisa, _ = _run(tiny_wan, SparseAttentionConfig(policy="pisa", sparsity=0.5, **TINY))
    _, dropped, _ = _run(tiny_wan, SparseAttentionConfig(policy="pisa", sparsity=0.5, params=PisaParams(order=-1),
                                                         **TINY))
    _, sol, _ = _run(tiny_wan, SparseAttentionConfig(policy="sol-attn", **TINY))
    assert pisa.metrics["estimate_cost"] > 0.0 == dropped.metrics["estimate_cost"]
    assert sol.metrics["estimate_cost"] > 0.0  # its pooled tail is an estimate too
    assert pisa.metrics["attention_sparsity"] == dropped.metrics["attention_sparsity"]


def test_estimate_groups_must_divide_the_block():
    from dit_accel.accel.sparse.policies.pisa import PisaParams
    with pytest.raises(ValueError, match="must divide block_size"):
        SparseAttentionConfig(policy="pisa", block_size=16, params=PisaParams(sub_block=6))


def test_family_presets_are_valid_and_step_up_in_sparsity():
    from dit_accel.accel.sparse.presets import LEVELS, family_presets
    for family, levels in family_presets().items():
        sparsities = [levels[level].sparsity for level in LEVELS]
        assert sparsities == sorted(sparsities), family
        for config in levels.values():
            SparseAttentionConfig(**{f: getattr(config, f) for f in config.__dataclass_fields__})  # re-validates
