"""CFG parallelism (mode "cfg"): cond and uncond on separate cfg groups give the one-process output, alone, with a
token split inside each group (4 ranks = 2 cfg x 2 sequence) and composed with the methods whose decisions must
cover both streams (block cache, CG-Taylor's probe) or not (forecast schedule, sparse attention)."""
import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.caching import BlockCacheConfig, BlockCachePatch
from dit_accel.accel.context import StepContext
from dit_accel.accel.forecasting.methods import ForecastSettings
from dit_accel.accel.host import AccelHost
from dit_accel.accel.parallel.cfg_split import ChunkShare, split_call
from dit_accel.accel.parallel.pool import PoolConfig, WorkerPool
from dit_accel.accel.parallel.run import parallel_accelerated, with_sequence_parallel
from dit_accel.accel.parallel.ulysses import SequenceParallelConfig
from dit_accel.accel.sparse.config import SparseAttentionConfig
from dit_accel.accel.sparse.patch import SparseAttentionPatch
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule

TOL = 2e-5


def _inputs(rows=2, h=16, w=16):
    g = torch.Generator().manual_seed(3)
    return (torch.randn(rows, 16, 1, h, w, generator=g), torch.randn(rows, 3, 64, generator=g),
            torch.randn(rows, 3, 64, generator=g))


def _sample(fn, noise, cond, uncond, steps, cfg=4.0):
    return sample_euler_cfg(fn, noise, cond, uncond, simple_schedule(steps), cfg)


def _one_process(model, patches, inputs, steps, cfg=4.0):
    host = AccelHost(adapter_for(model), tuple(patches))
    with accelerated(host, model) as (fn, run, _):
        return _sample(fn, *inputs, steps, cfg), run


def _parallel(model, patches, inputs, pool, steps, cfg=4.0, world=2):
    host = with_sequence_parallel(AccelHost(adapter_for(model), tuple(patches)), SequenceParallelConfig(world, "cfg"))
    with parallel_accelerated(host, model, pool) as (fn, run, summary):
        out = _sample(fn, *inputs, steps, cfg)
    return out, run, summary


def _close(a, b, tol=TOL):
    return (a - b).abs().max() <= tol * b.abs().max()


def test_a_share_takes_its_chunks_rows_and_options():
    share = ChunkShare(counts=(1, 1), rank=1, rows_per_chunk=2)  # 2 chunks of 2 rows: this group holds chunk 1
    x, sigmas = torch.arange(4.0).view(4, 1), torch.tensor([9.0, 9.0, 9.0, 9.0])
    options = {"cond_or_uncond": [0, 1], "uuids": ["c", "u"], "sigmas": sigmas, "sample_sigmas": torch.ones(4)}
    (x_local, keep, to), kwargs = split_call((x, torch.ones(1), options), {"y": torch.zeros(4, 3)}, 2, share)
    assert x_local.flatten().tolist() == [2.0, 3.0] and keep.shape == (1,) and kwargs["y"].shape == (2, 3)
    assert to["cond_or_uncond"] == [1] and to["uuids"] == ["u"] and to["sigmas"].shape == (2,)
    assert to["sample_sigmas"].shape == (4,), "the schedule is not per row"
    assert options["cond_or_uncond"] == [0, 1], "the sampler's own options stay whole"
    ctx = StepContext.from_transformer_options(to, 2)
    assert [s.kind for s in ctx.streams] == ["uncond"] and ctx.streams[0].rows == slice(0, 2)


def test_cfg_mode_needs_an_even_device_count():
    with pytest.raises(ValueError, match="even"):
        SequenceParallelConfig(3, "cfg")
    assert SequenceParallelConfig(4, "cfg").sequence_ranks == 2 and SequenceParallelConfig(2, "cfg").cfg_groups == 2


def test_cond_and_uncond_on_two_ranks_equal_one_process(pool, make_wan):
    model, inputs = make_wan(), _inputs()
    single, _ = _one_process(model, (), inputs, 4)
    double, run, summary = _parallel(model, (), inputs, pool, 4)
    assert _close(double, single)
    assert run.metrics["cfg_split_calls"] == 4 and "cfg axis: 2 groups x 1 ranks" in summary[0]


def test_at_cfg_1_every_group_runs_the_whole_call(pool, make_wan):
    model, inputs = make_wan(), _inputs()
    single, _ = _one_process(model, (), inputs, 3, cfg=1.0)
    double, run, summary = _parallel(model, (), inputs, pool, 3, cfg=1.0)
    assert torch.equal(double, single), "a call run whole is the one-process call"
    assert run.metrics["cfg_whole_calls"] == 3 and "mode auto uses every device" in summary[0]


def _block_cache():
    return BlockCachePatch(BlockCacheConfig(gate="first_block", threshold=0.3))


def _block_gate():
    return BlockCachePatch(BlockCacheConfig(gate="block", threshold=0.3))


def _taylorseer():
    return ForecastSettings("taylorseer", interval=2).patch()


def _cg_taylor():
    return ForecastSettings("cg-taylor", interval=3, threshold=0.5).patch()


def _sparse():
    return SparseAttentionPatch(SparseAttentionConfig(policy="pisa", sparsity=0.5, block_size=16, warmup_steps=1,
                                                      min_tokens=32))


@pytest.mark.parametrize("method", [_block_cache, _block_gate, _taylorseer, _cg_taylor, _sparse])
def test_composition_equals_one_process_running_the_method(pool, make_wan, method):
    model, inputs = make_wan(layers=3), _inputs()
    single, run1 = _one_process(model, (method(),), inputs, 10)
    double, run2, _ = _parallel(model, (method(),), inputs, pool, 10)
    if method is _sparse:
        assert run1.metrics.get("attention_sparsity", 0) > 0 and run2.metrics.get("attention_sparsity", 0) > 0
    elif method is not _cg_taylor:  # CG-Taylor's uncond group runs its own first block where one process does not
        assert run2.ledger.blocks_run == run1.ledger.blocks_run < run1.ledger.blocks_total, \
            "the groups must skip what one process skips (and something must be skipped)"
    else:
        assert run1.ledger.model_calls_run < run1.ledger.model_calls, "the probe trusted nothing: proves nothing"
        assert run2.ledger.model_calls_run == run1.ledger.model_calls_run
    assert _close(double, single, 1e-4)


def test_two_cfg_groups_of_two_sequence_ranks(make_wan, no_shared_pool):
    """The issue's example: 4 ranks = 2 cfg x 2 Ulysses; with the block cache, whose gate then agrees over both."""
    model, inputs = make_wan(layers=3), _inputs()
    single, run1 = _one_process(model, (_block_cache(),), inputs, 8)
    pool = WorkerPool(PoolConfig(world_size=4, device="cpu", timeout_s=60.0, threads=1))
    try:
        quad, run4, summary = _parallel(model, (_block_cache(),), inputs, pool, 8, world=4)
    finally:
        pool.shutdown()
    assert _close(quad, single, 1e-4)
    assert run4.ledger.blocks_run == run1.ledger.blocks_run < run1.ledger.blocks_total
    assert "2 groups x 2 ranks" in summary[0] and "ulysses" in summary[0]
