"""The block cache on a torch.compile'd model: same output as eager, and the only graph break is the decision."""
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.caching import BlockCacheConfig, BlockCachePatch
from dit_accel.accel.host import AccelHost
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule


def _run(model, module):
    noise = torch.randn(2, 16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    host = AccelHost(adapter_for(model), (BlockCachePatch(BlockCacheConfig(gate="block", threshold=0.5)),))
    with accelerated(host, module) as (fn, run, summary):
        out = sample_euler_cfg(fn, noise, label_context([1, 2]), label_context([UNCONDITIONAL] * 2),
                               simple_schedule(8), 4.0)
    return out, run.ledger.blocks_run


def test_compiled_model_matches_eager_and_breaks_only_at_the_decision(tiny_wan):
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters
    expected, blocks_eager = _run(tiny_wan, tiny_wan)
    dynamo.reset()
    counters.clear()
    # The "eager" backend captures graphs exactly as inductor would, without a C++ toolchain or minutes of codegen.
    out, blocks_compiled = _run(tiny_wan, torch.compile(tiny_wan, backend="eager"))
    assert torch.equal(out, expected) and blocks_compiled == blocks_eager
    assert counters["stats"]["unique_graphs"] > 0, "nothing was compiled: the test would prove nothing"
    breaks = dict(counters["graph_break"])
    # The decision: its host bookkeeping (`decide_jointly`, kept out of the graph: a dict keyed by step would make
    # every step recompile) and its read-back; and the memory plan made once per run at its first call.
    assert breaks and all("tolist" in reason or "plan_block_cache" in reason or "compiler.disable" in reason
                          for reason in breaks), breaks
    dynamo.reset()
