"""Every capability in one host, as a user chains the nodes: head guidance, forecasting and sparse attention (and,
instead of forecasting, the block cache) run together on one sampling run without getting in each other's way."""
import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.caching import BlockCacheConfig, BlockCachePatch
from dit_accel.accel.forecasting.methods import ForecastSettings
from dit_accel.accel.guidance.reference_objective import softpag_post_cfg
from dit_accel.accel.guidance.softpag import SoftPAGConfig, SoftPAGPatch
from dit_accel.accel.host import AccelHost
from dit_accel.accel.sparse.config import SparseAttentionConfig
from dit_accel.accel.sparse.patch import SparseAttentionPatch
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule


@pytest.mark.parametrize("skipper", ["forecast", "blockcache"])
def test_guidance_skipping_and_sparse_attention_in_one_run(tiny_wan, skipper):
    guidance = SoftPAGConfig(heads=((1, 0),), scale=2.0, alpha=1.0)
    skipping = ForecastSettings("taylorseer", interval=3).patch() if skipper == "forecast" else \
        BlockCachePatch(BlockCacheConfig(gate="static", interval=2))
    sparse = SparseAttentionPatch(SparseAttentionConfig(policy="pisa", sparsity=0.5, block_size=16, warmup_steps=1,
                                                        min_tokens=32))
    host = AccelHost(adapter_for(tiny_wan), (SoftPAGPatch(guidance),)).with_patch(skipping).with_patch(sparse)
    noise = torch.randn(2, 16, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    cond, uncond = label_context([1, 2]), label_context([UNCONDITIONAL] * 2)
    with accelerated(host, tiny_wan) as (fn, run, summary):
        out = sample_euler_cfg(fn, noise, cond, uncond, simple_schedule(12), 4.0, post_cfg=softpag_post_cfg(guidance))
    assert torch.isfinite(out).all()
    assert run.ledger.blocks_run < run.ledger.blocks_total, "nothing was skipped"
    assert run.metrics.get("attention_sparsity", 0) > 0, "no attention call went sparse"
    names = " | ".join(summary)
    assert "softpag" in names and ("taylorseer" in names or "blockcache" in names)
