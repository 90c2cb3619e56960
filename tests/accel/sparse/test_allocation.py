"""Per-layer budgets: the greedy split keeps the mean keep count, gives blocks where the error falls fastest, and the
calibrated patch measures on the last warm-up step and keeps the run's work within the uniform budget's."""
from __future__ import annotations

import re

import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.host import AccelHost
from dit_accel.accel.sparse import SparseAttentionConfig, SparseAttentionPatch
from dit_accel.accel.sparse.allocation import Calibration, allocate, keep_counts, measure
from dit_accel.accel.sparse.blocks import Budget, Grid
from dit_accel.accel.sparse.policies import PolicyInput, make_policy
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule


def test_allocation_keeps_the_mean_and_feeds_the_steep_layer():
    flat = {k: 0.10 + 0.01 / k for k in range(2, 9)}       # barely improves with more blocks
    steep = {k: 0.50 / k for k in range(2, 9)}               # improves a lot
    keep = allocate({0: flat, 1: steep, 2: flat}, total_keep=15)
    assert sum(keep.values()) == 15
    assert keep[1] > 5 > keep[0]


def test_allocation_treats_a_rising_curve_as_flat():
    noisy = {2: 0.2, 3: 0.25, 4: 0.1}  # more blocks never hurt: the rise at 3 is noise, 2 -> 4 is the real gain
    keep = allocate({0: noisy, 1: {2: 0.2, 3: 0.19, 4: 0.18}}, total_keep=6)
    assert keep == {0: 4, 1: 2}


def test_keep_counts_stay_inside_the_block_range():
    assert keep_counts(2, 4, span=4) == [1, 2, 3, 4]
    assert keep_counts(8, 16, span=2) == [6, 7, 8, 9, 10]


def test_calibration_averages_calls_of_a_layer_and_ignores_another_length():
    cal = Calibration()
    cal.add(0, 16, {4: 0.2, 5: 0.1})
    cal.add(0, 16, {4: 0.4, 5: 0.3})
    cal.add(0, 32, {4: 9.0, 5: 9.0})
    assert cal.errors == {0: pytest.approx({4: 0.3, 5: 0.2})}


def test_measured_error_falls_to_zero_with_every_block_kept():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, 16, generator=gen) for _ in range(3))
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    inp = PolicyInput(q, k, v, Grid(1, 8, 8), 8, Budget(0.5), 16 ** -0.5)
    errors, work, estimate = measure(make_policy("pisa", order=-1), inp, exact, [2, 4, 8], stride=2)
    assert errors[8] < 1e-5 < errors[4] < errors[2]
    assert work == 2 * 32 * 64  # one pass of every 2nd query block (32 rows) over the 64 keys, per (batch, head)
    assert estimate == 0.0      # order -1: no estimate computed


def test_measured_error_matches_the_kernel_on_the_sampled_rows():
    from dit_accel.kernels.block_sparse import block_sparse_attention, layout_from_mask
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 64, 16, generator=gen) for _ in range(3))
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    policy = make_policy("pisa")
    inp = PolicyInput(q, k, v, Grid(1, 8, 8), 8, Budget(0.5), 16 ** -0.5)
    errors, _, estimate = measure(policy, inp, exact, [4], stride=1)
    assert estimate > 0.0
    sel = policy.select(inp)
    out = block_sparse_attention(q, k, v, layout_from_mask(sel.mask, 8, 8), sel.correction, 16 ** -0.5,
                                 backend="torch")
    assert errors[4] == pytest.approx(float((out - exact).norm() / exact.norm()), rel=1e-4)


def _run(model, config, steps=3):
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 16, 1, 8, 8, generator=gen)
    patch = SparseAttentionPatch(config)
    with accelerated(AccelHost(adapter_for(model), (patch,)), model) as (fn, run, summary):
        sample_euler_cfg(fn, noise, label_context([1, 2]), label_context([UNCONDITIONAL] * 2),
                         simple_schedule(steps), 4.0)
    return run, summary


def test_calibrated_patch_splits_the_same_budget_per_layer(tiny_wan):
    base = dict(policy="pisa", sparsity=0.5, block_size=4, warmup_steps=1)
    uniform, _ = _run(tiny_wan, SparseAttentionConfig(**base))
    calibrated, summary = _run(tiny_wan, SparseAttentionConfig(**base, allocation="calibrated"))
    kept = summary[0].split("key blocks kept per layer (of 4): ")[1].split(". ")[0]
    counts = [int(count) for _, count in re.findall(r"(\d+): (\d+)", kept)]
    assert len(counts) == 3 and sum(counts) == 3 * 2  # mean keep 2 of 4, as the uniform 50 % target
    # the trials' work is counted: never more skipped than the uniform budget
    assert 0 < calibrated.metrics["attention_sparsity"] < uniform.metrics["attention_sparsity"]


def test_calibrated_needs_a_warmup_step_and_a_sparsity_target():
    with pytest.raises(ValueError, match="warmup_steps >= 1"):
        SparseAttentionConfig(allocation="calibrated", warmup_steps=0)
    with pytest.raises(ValueError, match="no top_p"):
        SparseAttentionConfig(allocation="calibrated", top_p=0.9)
    with pytest.raises(ValueError, match="allocation must be one of"):
        SparseAttentionConfig(allocation="greedy")
