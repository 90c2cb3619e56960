"""Every family adapter on ComfyUI's own model class (tiny random configs): exact pass-through, every block and
attention call seen, and a block-cache run that skips counted work and stays close to full compute."""
from __future__ import annotations

import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.caching import BlockCacheConfig, BlockCachePatch
from dit_accel.accel.host import RUN_KEY, AccelHost
from dit_accel.accel.patch import DiTPatch


def _ops():
    import comfy.ops
    return dict(operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu")


def flux():
    from comfy.ldm.flux.model import Flux
    m = Flux(in_channels=4, out_channels=4, vec_in_dim=None, context_in_dim=32, hidden_size=64, mlp_ratio=4.0,
             num_heads=4, depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6], theta=10000, patch_size=2,
             qkv_bias=True, guidance_embed=False, txt_ids_dims=[], **_ops())
    return m, dict(x=torch.randn(2, 4, 8, 8), context=torch.randn(2, 5, 32)), {"double": 2, "single": 2}


def chroma():
    from comfy.ldm.chroma.model import Chroma
    m = Chroma(in_channels=16, out_channels=16, context_in_dim=32, hidden_size=64, mlp_ratio=4.0, num_heads=4,
               depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6], theta=10000, patch_size=2, qkv_bias=True,
               in_dim=64, out_dim=64, hidden_dim=32, n_layers=1, txt_ids_dims=[], vec_in_dim=None, **_ops())
    return m, dict(x=torch.randn(2, 4, 8, 8), context=torch.randn(2, 5, 32), guidance=torch.ones(2)), \
        {"double": 2, "single": 2}


def qwen_image():
    from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel
    m = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=3,
                                    attention_head_dim=16, num_attention_heads=4, joint_attention_dim=32,
                                    axes_dims_rope=(4, 6, 6), **_ops())
    return m, dict(x=torch.randn(2, 4, 1, 8, 8), context=torch.randn(2, 5, 32)), {"block": 3}


def hunyuan_video():
    from comfy.ldm.hunyuan_video.model import HunyuanVideo
    import inspect
    kwargs = dict(in_channels=4, out_channels=4, vec_in_dim=None, context_in_dim=32, hidden_size=64,
                  mlp_ratio=4.0, num_heads=4, depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6], theta=256,
                  patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=False, byt5=False, meanflow=False,
                  use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False)
    accepted = inspect.signature(HunyuanVideo.__init__).parameters
    if "image_model" in accepted:
        kwargs["image_model"] = None
    m = HunyuanVideo(**{k: v for k, v in kwargs.items() if k in accepted or "kwargs" in accepted}, **_ops())
    return m, dict(x=torch.randn(2, 4, 1, 8, 8), context=torch.randn(2, 5, 32)), {"double": 2, "single": 2}


def sd3():
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper
    m = OpenAISignatureMMDITWrapper(patch_size=2, in_channels=4, depth=2, adm_in_channels=32,
                                    context_embedder_config={"target": "torch.nn.Linear",
                                                             "params": {"in_features": 32, "out_features": 128}},
                                    **_ops())
    return m, dict(x=torch.randn(2, 4, 8, 8), context=torch.randn(2, 5, 32), y=torch.randn(2, 32)), {"block": 2}


def ltxv():
    from comfy.ldm.lightricks.model import LTXVModel
    m = LTXVModel(in_channels=8, cross_attention_dim=64, attention_head_dim=16, num_attention_heads=4,
                  caption_channels=32, num_layers=2, **_ops())
    return m, dict(x=torch.randn(2, 8, 2, 8, 8), context=torch.randn(2, 5, 32), attention_mask=None), {"block": 2}


FAMILIES = {"flux": flux, "chroma": chroma, "qwen_image": qwen_image, "hunyuan_video": hunyuan_video,
            "sd3": sd3, "ltxv": ltxv}


class Probe(DiTPatch):
    name = "probe"

    def __init__(self):
        self.blocks, self.attention = [], []

    def around_block(self, run, ctx, call, run_block):
        self.blocks.append((call.kind, call.index))
        return run_block(call.args)

    def around_attention(self, run, ctx, call, run_attention):
        self.attention.append((call.kind, call.heads, call.head_dim))
        return run_attention(call)


def _build(name):
    torch.manual_seed(0)
    try:
        model, inputs, blocks = FAMILIES[name]()
    except (ImportError, TypeError) as err:  # a family (or this constructor) newer than this ComfyUI
        pytest.skip(f"{name} cannot be built in this ComfyUI: {type(err).__name__}: {err}")
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return model.eval().requires_grad_(False), inputs, blocks


def _forward(model, inputs, sigma, transformer_options):
    b = inputs["x"].shape[0]
    to = {"sigmas": torch.full((b,), sigma), "sample_sigmas": torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]),
          "cond_or_uncond": [0, 1], "uuids": ["c", "u"], **transformer_options}
    rest = {k: v for k, v in inputs.items() if k != "x"}
    return model(inputs["x"], torch.full((b,), sigma * 1000), transformer_options=to, **rest)


def _host_options(host, model):
    to = {}
    host.install(to, model)
    to[RUN_KEY] = host.start_run()
    return to


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_adapter_is_exact_and_sees_every_block(name, comfy_root):
    model, inputs, blocks = _build(name)
    adapter = adapter_for(model)
    assert adapter.name == name
    with torch.no_grad():
        expected = _forward(model, inputs, 0.75, {})
        probe = Probe()
        host = AccelHost(adapter, (probe,))
        out = _forward(model, inputs, 0.75, _host_options(host, model))
    # Bit-identical on most families; LTX's attention backend rounds differently once q/k/v are handed over as
    # (B, H, L, D) views (1e-7 measured), so the bound is float32 rounding, not exact equality.
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    seen = {}
    for kind, index in probe.blocks:
        seen.setdefault(kind, []).append(index)
    assert seen == {kind: list(range(n)) for kind, n in blocks.items()}
    assert len(probe.attention) >= sum(blocks.values())
    assert all(h > 0 and d > 0 and h * d >= 64 for _, h, d in probe.attention)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_block_cache_skips_counted_work_on_every_family(name, comfy_root):
    model, inputs, blocks = _build(name)
    host = AccelHost(adapter_for(model), (BlockCachePatch(BlockCacheConfig(gate="static", interval=2,
                                                                           warmup_steps=1, final_steps=1)),))
    to = _host_options(host, model)
    run = to[RUN_KEY]
    with torch.no_grad():
        outs, full = [], []
        for sigma in (1.0, 0.75, 0.5, 0.25):
            outs.append(_forward(model, inputs, sigma, dict(to)))
            full.append(_forward(model, inputs, sigma, {}))
    lines = host.end_run(run)
    assert run.ledger.blocks_run < run.ledger.blocks_total, lines
    assert torch.equal(outs[0], full[0])  # warm-up step computed
    assert all(torch.isfinite(o).all() for o in outs)
    # The reused residuals must beat the no-cache alternative of dropping the skipped blocks (identity blocks).
    dropped = {"patches_replace": {"dit": {
        (kind.replace_key, i): (lambda a, e, keys=kind.stream_keys: {k: a[k] for k in keys})
        for kind, i in adapter_for(model).block_layout(model)}}}
    with torch.no_grad():
        identity = _forward(model, inputs, 0.75, dropped)
    assert (outs[1] - full[1]).norm() < (identity - full[1]).norm()
