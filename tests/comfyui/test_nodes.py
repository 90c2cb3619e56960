"""Our nodes, called the way ComfyUI calls them, on the reference model through ComfyUI's sampler."""
from __future__ import annotations

import logging

import pytest
import torch

CUSTOM_OFF = dict(speed="custom", threshold=0.0, gate="block", granularity="stack", interval=2, start_percent=0.0,
                  end_percent=1.0, warmup_steps=1, final_steps=1, max_consecutive=2, forecast_order=2)


def _execute(registry, node_id, **kwargs):
    out = registry[node_id].execute(**kwargs)
    return out.args if hasattr(out, "args") else out


def _graph(registry, model, digits=(3, 8), steps=12, cfg=4.0):
    import nodes
    positive = [[torch.cat([_execute(registry, "DiTAccelDigitLabel", digit=str(d))[0][0][0] for d in digits]), {}]]
    negative = _execute(registry, "DiTAccelDigitLabel", digit="unconditional")[0]
    latent = _execute(registry, "DiTAccelDigitEmptyLatent", size=128, batch_size=len(digits))[0]
    sampled = nodes.common_ksampler(model, 11, steps, cfg, "euler", "simple", positive, negative, latent)[0]
    return sampled, _execute(registry, "DiTAccelDigitDecode", samples=sampled)[0]


def test_reference_nodes_draw_the_requested_digits(node_registry):
    from dit_accel.reference.assets import load_classifier
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    _, images = _graph(node_registry, model, digits=(3, 8, 0, 5))
    assert images.shape == (4, 128, 128, 3) and 0 <= images.min() and images.max() <= 1
    predicted = load_classifier().predict(images[..., :1].movedim(-1, 1))
    assert predicted.tolist() == [3, 8, 0, 5]


def test_block_cache_off_is_bit_identical(node_registry):
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    plain, _ = _graph(node_registry, model)
    cached = _execute(node_registry, "DiTAccelBlockCache", model=model, **CUSTOM_OFF)[0]
    out, _ = _graph(node_registry, cached)
    assert torch.equal(plain["samples"], out["samples"])


def test_block_cache_balanced_skips_blocks_and_logs_it(node_registry, caplog):
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    plain, images_full = _graph(node_registry, model, steps=20)
    cached = _execute(node_registry, "DiTAccelBlockCache", model=model, **{**CUSTOM_OFF, "speed": "balanced"})[0]
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        out, images = _graph(node_registry, cached, steps=20)
    line = next(r.getMessage() for r in caplog.records if "blockcache" in r.getMessage())
    speedup = float(line.split("evaluations, ")[1].split("x")[0])
    assert speedup > 2.0
    psnr = 10 * torch.log10(1 / ((images - images_full) ** 2).mean())
    assert psnr > 25


def test_block_cache_short_schedule_says_so(node_registry, caplog):
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    cached = _execute(node_registry, "DiTAccelBlockCache", model=model, **{**CUSTOM_OFF, "speed": "balanced"})[0]
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        _graph(node_registry, cached, steps=2)
    assert any("too short to cache" in r.getMessage() for r in caplog.records)


def test_block_cache_bad_settings_name_the_fix(node_registry):
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    with pytest.raises(ValueError, match="start_percent below end_percent"):
        _execute(node_registry, "DiTAccelBlockCache", model=model,
                 **{**CUSTOM_OFF, "threshold": 0.2, "start_percent": 0.9, "end_percent": 0.1})


FORECAST = dict(method="taylorseer", speed="balanced", interval=5, threshold=0.05, order=1, degree=3,
                granularity="model", start_percent=0.0, end_percent=1.0, warmup_steps=1, final_steps=-1)
SPARSE = dict(speed="balanced", policy="pisa", sparsity=0.5, warmup_steps=1, top_p=0.0, dense_layers="",
              block_size="16")


@pytest.mark.parametrize("node_id, settings", [
    ("DiTAccelBlockCache", {**CUSTOM_OFF, "speed": "balanced"}), ("DiTAccelBlockCache", CUSTOM_OFF),
    ("DiTAccelForecast", FORECAST), ("DiTAccelSparseAttention", SPARSE)])
def test_a_node_resolves_the_family_adapter_once(node_registry, monkeypatch, node_id, settings):
    """The node resolves the model's family adapter and hands it to the bridge, which does not resolve it again."""
    import sys
    node_module = sys.modules[node_registry[node_id].__module__]
    patcher = sys.modules[node_module.apply_patch.__module__]
    resolved = []
    original = patcher.adapter_for

    def counting(model):
        resolved.append(model)
        return original(model)

    monkeypatch.setattr(patcher, "adapter_for", counting)
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    patched = _execute(node_registry, node_id, model=model, **settings)[0]
    assert patched is not model and len(resolved) == 1


def test_unsupported_model_is_a_clear_error(node_registry, comfy_root):
    """An AuraFlow model (tiny, random) is not served: the error names the model and the supported families."""
    import comfy.ldm.aura.mmdit
    import comfy.model_patcher
    import comfy.ops
    aura = comfy.ldm.aura.mmdit.MMDiT(dim=64, n_layers=2, n_double_layers=1, n_heads=2, global_conddim=64,
                                      cond_seq_dim=32, max_seq=64, operations=comfy.ops.disable_weight_init,
                                      dtype=torch.float32, device="cpu")

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.diffusion_model = aura

    patcher = comfy.model_patcher.ModelPatcher(Holder(), torch.device("cpu"), torch.device("cpu"))
    from dit_accel.accel.adapters.registry import UnsupportedModelError
    from dit_accel.accel.caching import BlockCachePatch
    from dit_accel.nodes.comfy.patcher import apply_patch
    with pytest.raises(UnsupportedModelError, match=r"'MMDiT'.*Supported families: .*flux.*lumina.*wan"):
        apply_patch(patcher, BlockCachePatch())


def _sample_with(model, positive, negative, latent, steps=12, denoise=1.0):
    import nodes
    return nodes.common_ksampler(model, 5, steps, 4.0, "euler", "simple", positive, negative, latent,
                                 denoise=denoise)[0]["samples"]


def test_block_cache_on_partial_denoise_and_several_conds(node_registry):
    """img2img (sampling starts mid-schedule) and two positive conditionings (three streams per call)."""
    from dit_accel.reference import latent as codec
    from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    off = _execute(node_registry, "DiTAccelBlockCache", model=model, **CUSTOM_OFF)[0]
    balanced = _execute(node_registry, "DiTAccelBlockCache", model=model, **{**CUSTOM_OFF, "speed": "balanced"})[0]
    start = {"samples": codec.encode(torch.rand(2, 1, 128, 128))}
    two_conds = [[label_context([3, 3]), {}], [label_context([8, 8]), {"strength": 0.5}]]
    negative = [[label_context([UNCONDITIONAL] * 2), {}]]
    for positive, latent, denoise in ((two_conds, {"samples": torch.zeros(2, 16, 1, 32, 32)}, 1.0),
                                      ([[label_context([5, 5]), {}]], start, 0.6)):
        plain = _sample_with(model, positive, negative, latent, denoise=denoise)
        assert torch.equal(_sample_with(off, positive, negative, latent, denoise=denoise), plain)
        cached = _sample_with(balanced, positive, negative, latent, denoise=denoise)
        assert torch.isfinite(cached).all() and cached.shape == plain.shape
        psnr = 10 * torch.log10(1 / ((codec.decode(cached) - codec.decode(plain)) ** 2).mean())
        assert psnr > 20


def random_lora() -> dict:
    """A rank-4 LoRA on the first four blocks' query projections, strong enough to change the samples."""
    from dit_accel.reference.lora import random_lora as build
    return build(layers=("self_attn.q",), blocks=range(4), scale=0.2)


def test_block_cache_chains_with_a_lora_before_or_after(node_registry):
    """A LoRA applied through ComfyUI's loader before or after our node is applied, and caching still works."""
    import comfy.sd
    from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    lora = random_lora()

    def with_lora(m):
        return comfy.sd.load_lora_for_models(m, None, lora, 1.0, 0.0)[0]

    def cache(m, **settings):
        return _execute(node_registry, "DiTAccelBlockCache", model=m, **{**CUSTOM_OFF, **settings})[0]

    positive, negative = [[label_context([2, 6]), {}]], [[label_context([UNCONDITIONAL] * 2), {}]]
    latent = {"samples": torch.zeros(2, 16, 1, 32, 32)}
    plain = _sample_with(model, positive, negative, latent)
    lora_only = _sample_with(with_lora(model), positive, negative, latent)
    assert not torch.equal(plain, lora_only), "the LoRA changed nothing: the test would prove nothing"
    assert torch.equal(_sample_with(cache(with_lora(model)), positive, negative, latent), lora_only)
    assert torch.equal(_sample_with(with_lora(cache(model)), positive, negative, latent), lora_only)
    cached = _sample_with(with_lora(cache(model, speed="balanced")), positive, negative, latent)
    assert (cached - lora_only).abs().mean() < (plain - lora_only).abs().mean()
