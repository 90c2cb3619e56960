"""SoftPAG on a tiny Wan-format model: exact when off, equal to a direct PAG implementation at alpha 1, the
branch skips the shared prefix, and the branch never touches another patch's per-stream state."""
from __future__ import annotations

import types

import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.caching import BlockCacheConfig, BlockCachePatch
from dit_accel.accel.context import BRANCH_KEY, StepContext
from dit_accel.accel.guidance.reference_objective import softpag_post_cfg
from dit_accel.accel.guidance.softpag import BRANCH, SoftPAGConfig, SoftPAGPatch, branch_options, guide
from dit_accel.accel.host import AccelHost
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.sampling import FLOW_MULTIPLIER, sample_euler_cfg, simple_schedule

STEPS = 4


def _inputs(seed: int = 0, batch: int = 2):
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, 16, 1, 8, 8, generator=gen)
    cond = torch.randn(batch, 1, 4096, generator=gen)
    uncond = torch.randn(batch, 1, 4096, generator=gen)
    return noise, cond, uncond


def _plain(model, noise, cond, uncond, cfg=4.0, post_cfg=None):
    return sample_euler_cfg(lambda x, t, c, o: model(x, t, c, o), noise, cond, uncond, simple_schedule(STEPS), cfg,
                            post_cfg=post_cfg)


def _patched(model, patches, noise, cond, uncond, post_cfg, cfg=4.0):
    host = AccelHost(adapter_for(model), tuple(patches))
    with accelerated(host, model) as (model_fn, run, summary):
        out = sample_euler_cfg(model_fn, noise, cond, uncond, simple_schedule(STEPS), cfg, post_cfg=post_cfg)
    return out, run, summary


def _softpag(model, config, noise, cond, uncond, cfg=4.0):
    return _patched(model, [SoftPAGPatch(config)], noise, cond, uncond, softpag_post_cfg(config), cfg)


@pytest.mark.parametrize("setting", [dict(scale=0.0), dict(alpha=0.0)])
def test_scale_or_alpha_zero_is_identical_to_the_unpatched_model(tiny_wan, setting):
    noise, cond, uncond = _inputs()
    config = SoftPAGConfig(heads=((1, 0), (2, None)), **{"scale": 3.0, "alpha": 0.7, **setting})
    out, _, summary = _softpag(tiny_wan, config, noise, cond, uncond)
    assert torch.equal(out, _plain(tiny_wan, noise, cond, uncond))
    assert "outputs equal the unpatched model" in summary[0]


class _LayerPAG:
    """The direct implementation: layer `layer`'s self-attention returns V (identity map), for a full forward."""

    def __init__(self, model, layer: int):
        self.attn = model.blocks[layer].self_attn

    def __enter__(self):
        attn = self.attn
        attn.forward = types.MethodType(lambda self, x, freqs, to: self.o(self.v(x)), attn)

    def __exit__(self, *exc):
        del self.attn.forward


def _direct_pag_post_cfg(model, layer: int, scale: float):
    def post_cfg(args):
        x, sigma = args["input"], args["sigma"]
        with _LayerPAG(model, layer):
            velocity = model(x, sigma * FLOW_MULTIPLIER, args["context"], {})
        return guide(args["denoised"], args["cond_denoised"], x - velocity * sigma[0], scale)
    return post_cfg


@pytest.mark.parametrize("layer,cfg", [(0, 4.0), (2, 1.0)])  # cfg 1: guidance-distilled models, no uncond pass
def test_alpha_one_on_every_head_of_a_layer_equals_layer_pag(tiny_wan, layer, cfg):
    noise, cond, uncond = _inputs(1)
    heads = ((layer, 0), (layer, 1))  # both heads of the layer, written out
    out, run, _ = _softpag(tiny_wan, SoftPAGConfig(heads=heads, scale=2.0, alpha=1.0), noise, cond, uncond, cfg)
    direct = _plain(tiny_wan, noise, cond, uncond, cfg, _direct_pag_post_cfg(tiny_wan, layer, 2.0))
    plain = _plain(tiny_wan, noise, cond, uncond, cfg)
    assert not torch.allclose(direct, plain, atol=1e-3)  # the perturbation matters at this scale
    torch.testing.assert_close(out, direct, atol=1e-5, rtol=1e-5)


def _one_call(model, patch, x, t, context, options):
    host = AccelHost(adapter_for(model), (patch,))
    with accelerated(host, model) as (model_fn, run, _):
        return model_fn(x, t, context, options), run


def test_soft_blend_of_one_head_matches_a_direct_blend(tiny_wan):
    """alpha in (0, 1) on head 1 of layer 1: (1 - alpha) softmax(QK^T)V + alpha V on that head only."""
    noise, cond, _ = _inputs(2)
    t = torch.full((2,), 500.0)
    alpha = 0.3
    from dit_accel.reference import wan_dit
    attn = tiny_wan.blocks[1].self_attn
    original = wan_dit.attention

    def blended(q, k, v, heads, to):
        out = wan_dit.sdpa_attention(q, k, v, heads=heads, skip_output_reshape=True)
        b, s, _ = v.shape
        vh = v.view(b, s, heads, -1).transpose(1, 2)
        out[:, 1] = (1 - alpha) * out[:, 1] + alpha * vh[:, 1]
        return out.transpose(1, 2).reshape(b, s, -1)

    def direct_attention(q, k, v, heads, to):
        return blended(q, k, v, heads, to) if q.shape[1] == k.shape[1] and to.get("_direct") else \
            original(q, k, v, heads, to)

    wan_dit.attention = direct_attention
    try:
        attn.forward = types.MethodType(
            lambda self, x, freqs, to: wan_dit.SelfAttention.forward(self, x, freqs, {**to, "_direct": True}), attn)
        expected = tiny_wan(noise, t, cond, {})
    finally:
        wan_dit.attention = original
        del attn.forward
    patch = SoftPAGPatch(SoftPAGConfig(heads=((1, 1),), alpha=alpha, reuse_prefix=False))
    got, _ = _one_call(tiny_wan, patch, noise, t, cond, branch_options({"cond_or_uncond": [0]}))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    unperturbed, _ = _one_call(tiny_wan, patch, noise, t, cond, {"cond_or_uncond": [0]})
    torch.testing.assert_close(unperturbed, tiny_wan(noise, t, cond, {}), atol=0, rtol=0)


def test_branch_skips_the_blocks_before_the_first_perturbed_layer(tiny_wan):
    noise, cond, uncond = _inputs(3)
    config = SoftPAGConfig(heads=((2, 1),), scale=1.5)
    out, run, summary = _softpag(tiny_wan, config, noise, cond, uncond)
    # CFG: 3 blocks per step; the branch: 1 block (layer 2) per step, on half the rows.
    assert run.ledger.blocks_run == STEPS * 3 + STEPS * 1
    assert run.metrics["guidance_extra_cost"] == pytest.approx((STEPS * 1 * 2) / (STEPS * 3 * 4))
    assert f"on {STEPS}/{STEPS} steps, {STEPS} of them starting at layer 2" in summary[0]
    full, run_full, _ = _softpag(tiny_wan, SoftPAGConfig(heads=((2, 1),), scale=1.5, reuse_prefix=False),
                                 noise, cond, uncond)
    assert run_full.ledger.blocks_run == STEPS * 3 * 2
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)


def test_schedule_limits_the_branch_to_its_window(tiny_wan):
    noise, cond, uncond = _inputs(4)
    config = SoftPAGConfig(heads=((1, 0),), scale=1.5, start_percent=0.25, end_percent=0.75)
    _, run, summary = _softpag(tiny_wan, config, noise, cond, uncond)
    assert run.metrics["guidance_steps"] == 2  # steps 1 and 2 of 4 (percent 0.25, 0.5)
    assert f"on 2/{STEPS} steps" in summary[0]


def test_branch_streams_have_their_own_keys():
    options = {"cond_or_uncond": [0], "uuids": ["u-cond"]}
    main = StepContext.from_transformer_options(options, 2)
    branch = StepContext.from_transformer_options(branch_options(options), 2)
    assert branch.branch == BRANCH and main.branch is None
    assert branch.streams[0].key != main.streams[0].key
    assert branch.streams[0].source_key == main.streams[0].key
    assert BRANCH_KEY not in options


def test_branch_leaves_the_block_cache_state_of_the_cond_stream_alone(tiny_wan):
    """The main pass with a block cache must not change when a branch call runs between its steps."""
    noise, cond, uncond = _inputs(5)
    cache = BlockCacheConfig(gate="block", threshold=1.0, max_consecutive=2, warmup_steps=1, final_steps=0)
    config = SoftPAGConfig(heads=((1, None),), scale=1.0)
    branch = softpag_post_cfg(config)

    def discard_branch(args):
        branch(args)  # runs the perturbed call, then ignores it
        return args["denoised"]

    alone, _, _ = _patched(tiny_wan, [BlockCachePatch(cache)], noise, cond, uncond, None)
    both, run, summary = _patched(tiny_wan, [SoftPAGPatch(config), BlockCachePatch(cache)], noise, cond, uncond,
                                  discard_branch)
    assert torch.equal(alone, both)
    assert any("blockcache" in line for line in summary) and run.metrics["guidance_steps"] == STEPS


@pytest.mark.parametrize("order", ["softpag_first", "cache_first"])
def test_guidance_with_block_cache_runs_and_guides(tiny_wan, order):
    noise, cond, uncond = _inputs(6)
    config = SoftPAGConfig(heads=((1, None),), scale=1.0)
    cache = BlockCachePatch(BlockCacheConfig(gate="block", threshold=1.0, max_consecutive=2))
    patches = [SoftPAGPatch(config), cache] if order == "softpag_first" else [cache, SoftPAGPatch(config)]
    out, run, summary = _patched(tiny_wan, patches, noise, cond, uncond, softpag_post_cfg(config))
    cached_only, _, _ = _patched(tiny_wan, [BlockCachePatch(cache.config)], noise, cond, uncond, None)
    assert torch.isfinite(out).all() and len(summary) == 2
    assert not torch.allclose(out, cached_only, atol=1e-4)  # the guidance term still acts under caching
    assert run.metrics["guidance_steps"] == STEPS


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="alpha"):
        SoftPAGConfig(heads=((0, 0),), alpha=1.5)
    with pytest.raises(ValueError, match="start_percent below end_percent"):
        SoftPAGConfig(heads=((0, 0),), start_percent=0.8, end_percent=0.2)
    with pytest.raises(ValueError, match="scale"):
        SoftPAGConfig(heads=((0, 0),), scale=-1)


# ---- memory budget: the kept cond-pass input -------------------------------------------------------------------

class _Watch(SoftPAGPatch):
    """SoftPAG that records, at each branch call, the bytes the cond pass kept for it."""

    def __init__(self, config):
        super().__init__(config)
        self.kept: list[int] = []

    def before_blocks(self, run, ctx, call):
        from dit_accel.accel.memory import state_nbytes
        if ctx.branch == BRANCH:
            self.kept.append(state_nbytes(self.run_data(run).saved))
        super().before_blocks(run, ctx, call)


def test_planned_state_equals_what_a_real_run_keeps_for_the_branch(tiny_wan):
    from dit_accel.accel.memory import StateShape, state_nbytes
    noise, cond, uncond = _inputs(5)
    config = SoftPAGConfig(heads=((2, 1),), scale=1.5, memory_gib=0.0)
    shapes, kept = [], []

    class Watch(SoftPAGPatch):
        def before_blocks(self, run, ctx, call):
            if ctx.branch == BRANCH:  # what the cond pass left for this branch
                kept.append(state_nbytes(self.run_data(run).saved))
            elif not shapes:
                shapes.append(StateShape.of(call, call.hidden, ctx))
            super().before_blocks(run, ctx, call)
    _patched(tiny_wan, [Watch(config)], noise, cond, uncond, softpag_post_cfg(config))
    rows, tokens, width = shapes[0].streams[0][1]
    assert kept and max(kept) == (rows // 2) * tokens * width * 4  # the cond rows' hidden state, fp32
    budgeted = SoftPAGPatch(SoftPAGConfig(heads=((2, 1),), scale=1.5, memory_gib=1.0))
    fit = budgeted.memory_fit(shapes[0], None, STEPS, torch.device("cpu"))
    assert fit.device_bytes == max(kept) and not fit.steps and fit.fits


def test_over_its_budget_the_branch_recomputes_the_prefix_and_keeps_nothing(tiny_wan):
    noise, cond, uncond = _inputs(6)
    tiny_budget = 1e-9  # GiB: less than any hidden state
    config = SoftPAGConfig(heads=((2, 1),), scale=1.5, memory_gib=tiny_budget)
    watch = _Watch(config)
    out, run, summary = _patched(tiny_wan, [watch], noise, cond, uncond, softpag_post_cfg(config))
    expected, run_full, _ = _softpag(tiny_wan, SoftPAGConfig(heads=((2, 1),), scale=1.5, reuse_prefix=False),
                                     noise, cond, uncond)
    assert torch.equal(out, expected)  # exactly the setting the budget fell back to
    assert run.ledger.blocks_run == run_full.ledger.blocks_run == STEPS * 3 * 2
    assert len(watch.kept) == STEPS and not any(watch.kept)
    assert "recomputes the blocks before the first perturbed layer" in summary[0], summary[0]
    assert "0 of them starting at layer 2" in summary[0]


def test_default_budget_keeps_the_configured_setting_where_it_fits(tiny_wan):
    noise, cond, uncond = _inputs(7)
    config = SoftPAGConfig(heads=((2, 1),), scale=1.5)
    out, run, summary = _softpag(tiny_wan, config, noise, cond, uncond)
    unlimited, _, _ = _softpag(tiny_wan, SoftPAGConfig(heads=((2, 1),), scale=1.5, memory_gib=0.0),
                               noise, cond, uncond)
    assert torch.equal(out, unlimited)
    assert f"{STEPS} of them starting at layer 2" in summary[0] and "within its memory budget" in summary[0]
