"""Ulysses / ring sequence parallelism on the reference model: 2 gloo ranks give the one-process output, 1 rank the
unpatched one bit for bit, alone and composed with the block cache, the forecaster and sparse attention."""
import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.caching import BlockCacheConfig, BlockCachePatch
from dit_accel.accel.forecasting.methods import ForecastSettings
from dit_accel.accel.host import AccelHost
from dit_accel.accel.parallel.run import parallel_accelerated, with_sequence_parallel
from dit_accel.accel.parallel.ulysses import SequenceParallelConfig
from dit_accel.accel.sparse.config import SparseAttentionConfig
from dit_accel.accel.sparse.patch import SparseAttentionPatch
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule

TOL = 2e-5  # float32: the attention's softmax sums the same terms in another order on the head-split ranks


def _inputs(h=16, w=16, rows=2):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(rows, 16, 1, h, w, generator=g), torch.randn(rows, 3, 64, generator=g),
            torch.randn(rows, 3, 64, generator=g))


def _sample(fn, noise, cond, uncond, steps=4):
    return sample_euler_cfg(fn, noise, cond, uncond, simple_schedule(steps), 4.0)


def _one_process(model, patches, inputs, steps=4):
    host = AccelHost(adapter_for(model), tuple(patches))
    with accelerated(host, model) as (fn, run, _):
        return _sample(fn, *inputs, steps=steps), run


def _two_ranks(model, patches, inputs, pool, mode="auto", steps=4):
    host = with_sequence_parallel(AccelHost(adapter_for(model), tuple(patches)), SequenceParallelConfig(2, mode))
    with parallel_accelerated(host, model, pool) as (fn, run, summary):
        out = _sample(fn, *inputs, steps=steps)
    return out, run, summary


def test_one_rank_is_bit_identical(make_wan):
    model, inputs = make_wan(), _inputs()
    plain, _ = _one_process(model, (), inputs)
    host = with_sequence_parallel(AccelHost(adapter_for(model)), SequenceParallelConfig(1))
    with accelerated(host, model) as (fn, _, _):
        assert torch.equal(_sample(fn, *inputs), plain)


@pytest.mark.parametrize("dim, mode, hw, expect", [
    (256, "ulysses", (16, 16), "ulysses"),    # 2 heads on 2 ranks, 64 tokens
    (256, "ring", (16, 16), "ring"),
    (384, "auto", (14, 18), "ring"),          # 3 heads do not divide: auto picks ring; 63 tokens split 32 / 31
    (384, "ulysses", (14, 18), "ulysses"),    # uneven head groups (2 / 1) and uneven shards
])
def test_two_ranks_equal_one_process(pool, make_wan, dim, mode, hw, expect):
    model, inputs = make_wan(dim), _inputs(*hw)
    single, _ = _one_process(model, (), inputs)
    double, _, summary = _two_ranks(model, (), inputs, pool, mode)
    assert (double - single).abs().max() < TOL * single.abs().max()
    assert f" {expect}" in summary[0] and "attention calls" in summary[0]


def _block_cache():
    return BlockCachePatch(BlockCacheConfig(gate="first_block", threshold=0.3))


def _forecast():
    return ForecastSettings("taylorseer", interval=2).patch()


def _sparse():
    return SparseAttentionPatch(SparseAttentionConfig(policy="pisa", sparsity=0.5, block_size=16, warmup_steps=1,
                                                      min_tokens=32))


@pytest.mark.parametrize("method", [_block_cache, _forecast, _sparse])
def test_composition_equals_one_process_running_the_method(pool, make_wan, method):
    model, inputs = make_wan(layers=3), _inputs()
    single, run1 = _one_process(model, (method(),), inputs, steps=10)
    double, run2, _ = _two_ranks(model, (method(),), inputs, pool, steps=10)
    assert (run2.ledger.blocks_run, run2.ledger.blocks_total) == (run1.ledger.blocks_run, run1.ledger.blocks_total)
    if method is not _sparse:
        assert run1.ledger.blocks_run < run1.ledger.blocks_total, "the method skipped nothing: the test proves nothing"
    else:
        assert run1.metrics.get("attention_sparsity", 0) > 0 and run2.metrics.get("attention_sparsity", 0) > 0
    assert (double - single).abs().max() < 1e-4 * single.abs().max()
