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


def _lumina_inputs():
    # ComfyUI hands NextDiT the flow time in [0, 1] (it embeds 1 - t); the other families get sigma * 1000.
    return dict(x=torch.randn(2, 4, 8, 8), context=torch.randn(2, 5, 32), num_tokens=5, timestep_scale=1.0)


def lumina():
    from comfy.ldm.lumina.model import NextDiT
    m = NextDiT(patch_size=2, in_channels=4, dim=64, n_layers=3, n_refiner_layers=1, n_heads=4, n_kv_heads=4,
                multiple_of=16, ffn_dim_multiplier=4.0, qk_norm=True, cap_feat_dim=32, axes_dims=[4, 6, 6],
                axes_lens=[64, 64, 64], **_ops())
    return m, _lumina_inputs(), {"layer": 3}


def z_image():
    # Z-Image's modulation needs dim >= 256 (its t-embedder outputs 256 wide); pad tokens to a multiple of 32.
    from comfy.ldm.lumina.model import NextDiT
    m = NextDiT(patch_size=2, in_channels=4, dim=256, n_layers=2, n_refiner_layers=1, n_heads=8, n_kv_heads=8,
                multiple_of=16, ffn_dim_multiplier=8 / 3, qk_norm=True, cap_feat_dim=32, axes_dims=[8, 12, 12],
                axes_lens=[64, 64, 64], z_image_modulation=True, time_scale=1000.0, pad_tokens_multiple=32,
                **_ops())
    return m, _lumina_inputs(), {"layer": 2}


def ltxav():
    from comfy.ldm.lightricks.av_model import LTXAVModel
    m = LTXAVModel(in_channels=8, audio_in_channels=128, cross_attention_dim=64, audio_cross_attention_dim=32,
                   attention_head_dim=16, audio_attention_head_dim=8, num_attention_heads=4,
                   audio_num_attention_heads=4, caption_channels=32, num_layers=2, connector_attention_head_dim=8,
                   connector_num_attention_heads=4, connector_num_layers=1, **_ops())
    # video (B, C, F, H, W) and audio (B, 8 channels, T, 16 bins); the text context is video+audio wide (2 x 32)
    return m, dict(x=[torch.randn(2, 8, 2, 8, 8), torch.randn(2, 8, 4, 16)], context=torch.randn(2, 5, 64),
                   attention_mask=None), {"block": 2}


FAMILIES = {"flux": flux, "chroma": chroma, "qwen_image": qwen_image, "hunyuan_video": hunyuan_video,
            "sd3": sd3, "ltxv": ltxv, "lumina": lumina, "z_image": z_image, "ltxav": ltxav}
ADAPTER_OF = {"z_image": "lumina"}  # test models served by another family's adapter
# Random weights at 0.05 make the 256-wide Z-Image's blocks swing wildly with the timestep, unlike a trained model
# (whose slowly changing residuals are what caching relies on); a smaller scale keeps it in that regime.
INIT_STD = {"z_image": 0.02}


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
        p.data.normal_(0, INIT_STD.get(name, 0.05))
    return model.eval().requires_grad_(False), inputs, blocks


def _batch(x) -> int:
    return (x[0] if isinstance(x, (list, tuple)) else x).shape[0]


def _flat(out) -> torch.Tensor:
    """One tensor of every output stream (LTXAV returns [video, audio])."""
    return torch.cat([o.flatten() for o in out]) if isinstance(out, (list, tuple)) else out.flatten()


def _forward(model, inputs, sigma, transformer_options, object_patches=None):
    """The model's forward with the sampler's transformer_options keys; `object_patches` (what the node layer hands to
    ComfyUI's add_object_patch) are applied with ComfyUI's own set_attr for this call only."""
    import comfy.utils
    b = _batch(inputs["x"])
    to = {"sigmas": torch.full((b,), sigma), "sample_sigmas": torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]),
          "cond_or_uncond": [0, 1], "uuids": ["c", "u"], **transformer_options}
    rest = {k: v for k, v in inputs.items() if k not in ("x", "timestep_scale")}
    backup = {path: comfy.utils.set_attr(model, path, obj) for path, obj in (object_patches or {}).items()}
    try:
        timestep = torch.full((b,), sigma * inputs.get("timestep_scale", 1000.0))
        return model(inputs["x"], timestep, transformer_options=to, **rest)
    finally:
        for path, old in backup.items():  # what ModelPatcher.unpatch_model does
            comfy.utils.set_attr(model, path, old)


def _count_attention(model, inputs, sigma) -> int:
    """How many attention calls the unpatched forward makes (an override that only counts)."""
    calls = []

    def counting(func, *args, **kwargs):
        calls.append(1)
        return func(*args, **kwargs)

    _forward(model, inputs, sigma, {"optimized_attention_override": counting})
    return len(calls)


def _host_options(host, model):
    to = {}
    host.install(to, model)
    to[RUN_KEY] = host.start_run()
    return to


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_adapter_is_exact_and_sees_every_block(name, comfy_root):
    model, inputs, blocks = _build(name)
    adapter = adapter_for(model)
    assert adapter.name == ADAPTER_OF.get(name, name)
    with torch.no_grad():
        expected = _forward(model, inputs, 0.75, {})
        attention_calls = _count_attention(model, inputs, 0.75)
        probe = Probe()
        host = AccelHost(adapter, (probe,))
        out = _forward(model, inputs, 0.75, _host_options(host, model), adapter.object_patches(model))
    # Bit-identical on most families; LTX's attention backend rounds differently once q/k/v are handed over as
    # (B, H, L, D) views (1e-7 measured), so the bound is float32 rounding, not exact equality.
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    seen = {}
    for kind, index in probe.blocks:
        seen.setdefault(kind, []).append(index)
    assert seen == {kind: list(range(n)) for kind, n in blocks.items()}
    assert len(probe.attention) == attention_calls >= sum(blocks.values())
    assert all(h > 0 and d > 0 and h * d >= 32 for _, h, d in probe.attention)


@pytest.mark.parametrize("name", ["lumina", "z_image"])
def test_lumina_layer_patch_is_inert_without_a_run(name, comfy_root):
    """The object patch stays on the layers while ComfyUI keeps the model loaded, so it must change nothing for a
    call that is not a dit-accel run (the same weights sampled without our node)."""
    model, inputs, _ = _build(name)
    adapter = adapter_for(model)
    host = AccelHost(adapter, (Probe(),))
    installed = {}
    host.install(installed, model)  # our replacements present, but no run state: stays out of the call
    with torch.no_grad():
        expected = _forward(model, inputs, 0.5, {})
        assert torch.equal(_forward(model, inputs, 0.5, {}, adapter.object_patches(model)), expected)
        assert torch.equal(_forward(model, inputs, 0.5, installed, adapter.object_patches(model)), expected)
        assert torch.equal(_forward(model, inputs, 0.5, {}), expected)  # the patch came off again
    assert all(getattr(layer.forward, "__func__", None) is type(layer).forward for layer in model.layers)


class RowByRow(DiTPatch):
    """Runs every block one batch row at a time, as a patch computing a subset of rows does."""

    name = "row_by_row"

    def around_block(self, run, ctx, call, run_block):
        b = call.hidden.shape[0]
        outs = [run_block({k: v[r:r + 1] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == b else v
                           for k, v in call.args.items()}) for r in range(b)]
        return {k: torch.cat([o[k] for o in outs]) for k in call.stream_keys}


@pytest.mark.parametrize("omni", [False, True], ids=["text-to-image", "omni-reference-latent"])
def test_lumina_rows_stay_aligned(omni, comfy_root):
    """Z-Image omni gives each sample two adaLN rows; the adapter hands them over one row per sample, so a block run
    on a subset of rows gets the matching modulation."""
    import inspect
    model, inputs, _ = _build("z_image")
    if omni:
        if "ref_latents" not in inspect.signature(type(model)._forward).parameters:
            pytest.skip("this ComfyUI's NextDiT has no reference latents (omni)")
        inputs = dict(inputs, ref_latents=[torch.randn(1, 4, 8, 8)], ref_contexts=[torch.randn(1, 5, 32)])
    adapter = adapter_for(model)
    host = AccelHost(adapter, (RowByRow(),))
    with torch.no_grad():
        expected = _forward(model, inputs, 0.5, {})
        out = _forward(model, inputs, 0.5, _host_options(host, model), adapter.object_patches(model))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_block_cache_skips_counted_work_on_every_family(name, comfy_root):
    model, inputs, blocks = _build(name)
    adapter = adapter_for(model)
    host = AccelHost(adapter, (BlockCachePatch(BlockCacheConfig(gate="static", interval=2,
                                                                 warmup_steps=1, final_steps=1)),))
    to = _host_options(host, model)
    run = to[RUN_KEY]
    object_patches = adapter.object_patches(model)
    with torch.no_grad():
        outs, full = [], []
        for sigma in (1.0, 0.75, 0.5, 0.25):
            outs.append(_flat(_forward(model, inputs, sigma, dict(to), object_patches)))
            full.append(_flat(_forward(model, inputs, sigma, {})))
    lines = host.end_run(run)
    assert run.ledger.blocks_run < run.ledger.blocks_total, lines
    assert torch.equal(outs[0], full[0])  # warm-up step computed
    assert all(torch.isfinite(o).all() for o in outs)
    # The reused residuals must beat the no-cache alternative of dropping the skipped blocks (identity blocks).
    dropped = {"patches_replace": {"dit": {
        (kind.replace_key, i): (lambda a, e, keys=kind.stream_keys: {k: a[k] for k in keys if k in a})
        for kind, i in adapter.block_layout(model)}}}
    with torch.no_grad():
        identity = _flat(_forward(model, inputs, 0.75, dropped, object_patches))
    assert (outs[1] - full[1]).norm() < (identity - full[1]).norm()
