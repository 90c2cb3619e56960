"""One method end to end on every family: a tiny random model of each, built by ComfyUI's own model config
(`comfy.supported_models`, so its model_base wrapper, conditioning and latent format are ComfyUI's), wrapped in a
ModelPatcher, sampled with the KSampler node's path (`nodes.common_ksampler`, CFG 3, 4 steps) with the block cache
attached through the node layer (`apply_patch`). It must skip block work (counted in the run's ledger and named in
its summary line), its output must be closer to full compute than skipping the same blocks without reuse, and where
the adapter patches the model's layers (Lumina 2 / Z-Image) the plain MODEL must sample as before afterwards.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.caching import BlockCacheConfig, BlockCachePatch
from dit_accel.accel.patch import DiTPatch

STEPS, CFG = 4, 3.0
# Random weights at 0.05 make the 256-wide Z-Image's blocks swing wildly with the timestep, unlike a trained model
# (whose slowly changing residuals are what caching relies on); a smaller scale keeps it in that regime.
INIT_STD = {"z_image": 0.02}


@dataclass(frozen=True)
class Spec:
    config: str                 # class name in comfy.supported_models
    unet: dict                  # the diffusion model's (tiny) constructor config
    latent: tuple[int, ...] | None  # latent shape without the batch; None: LTX-2's [video, audio] NestedTensor
    context_dim: int
    cond: dict = field(default_factory=dict)  # extra conditioning: key -> shape (random values), or a fixed
                                              # tensor or list
    # The latent's noise mask (image-to-video: a kept first frame); LTX-2: a (video, audio) pair of masks.
    noise_mask: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None
    init_std: float | None = None  # the random weights' scale, where not the family's (INIT_STD)


_FLUX_LIKE = dict(vec_in_dim=None, context_in_dim=32, hidden_size=64, mlp_ratio=4.0, num_heads=4, depth=2,
                  depth_single_blocks=2, axes_dim=[4, 6, 6], patch_size=2, qkv_bias=True, txt_ids_dims=[])
_LUMINA = dict(image_model="lumina2", patch_size=2, in_channels=16, n_refiner_layers=1, multiple_of=16, qk_norm=True,
               cap_feat_dim=32, axes_lens=[64, 64, 64])

SPECS = {
    "wan": Spec("WAN21_T2V", dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), in_dim=16, dim=64,
                                  ffn_dim=128, freq_dim=256, text_dim=32, out_dim=16, num_heads=4, num_layers=3),
                (16, 1, 8, 8), 32),
    "flux": Spec("Flux", dict(image_model="flux", in_channels=16, out_channels=16, theta=10000, guidance_embed=False,
                              **_FLUX_LIKE), (16, 8, 8), 32, {"pooled_output": (1, 32)}),  # 0.8.0 reads it
    "chroma": Spec("Chroma", dict(image_model="chroma", in_channels=64, out_channels=64, theta=10000, in_dim=64,
                                  out_dim=64, hidden_dim=32, n_layers=1, **_FLUX_LIKE), (16, 8, 8), 32,
                  {"pooled_output": (1, 32)}),
    "qwen_image": Spec("QwenImage", dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16,
                                         num_layers=3, attention_head_dim=16, num_attention_heads=4,
                                         joint_attention_dim=32, axes_dims_rope=(4, 6, 6)), (16, 1, 8, 8), 32),
    "hunyuan_video": Spec("HunyuanVideo", dict(image_model="hunyuan_video", in_channels=16, out_channels=16,
                                               theta=256, patch_size=[1, 2, 2], guidance_embed=False, byt5=False,
                                               meanflow=False, use_cond_type_embedding=False, vision_in_dim=None,
                                               meanflow_sum=False,
                                               **{k: v for k, v in _FLUX_LIKE.items()
                                                  if k not in ("patch_size", "txt_ids_dims")}),
                          (16, 1, 8, 8), 32, {"pooled_output": (1, 32)}),
    "sd3": Spec("SD3", dict(patch_size=2, in_channels=16, depth=2, adm_in_channels=32,
                            context_embedder_config={"target": "torch.nn.Linear",
                                                     "params": {"in_features": 32, "out_features": 128}}),
                (16, 8, 8), 32, {"pooled_output": (1, 32)}),
    "ltxv": Spec("LTXV", dict(image_model="ltxv", in_channels=128, cross_attention_dim=64, attention_head_dim=16,
                              num_attention_heads=4, caption_channels=32, num_layers=3), (128, 2, 4, 4), 32,
                 {"attention_mask": torch.ones(1, 5, dtype=torch.long)}),  # the text encoder's token mask
    "ltxav": Spec("LTXAV", dict(image_model="ltxav", in_channels=128, audio_in_channels=128, cross_attention_dim=64,
                                audio_cross_attention_dim=32, attention_head_dim=16, audio_attention_head_dim=8,
                                num_attention_heads=4, audio_num_attention_heads=4, caption_channels=32,
                                num_layers=3, connector_attention_head_dim=8, connector_num_attention_heads=4,
                                connector_num_layers=1), None, 64),
    "lumina": Spec("Lumina2", dict(dim=64, n_layers=3, n_heads=4, n_kv_heads=4, ffn_dim_multiplier=4.0,
                                   axes_dims=[4, 6, 6], **_LUMINA), (16, 8, 8), 32),
    "z_image": Spec("ZImage", dict(dim=256, n_layers=3, n_heads=8, n_kv_heads=8, ffn_dim_multiplier=8 / 3,
                                   axes_dims=[8, 12, 12], z_image_modulation=True, time_scale=1000.0,
                                   pad_tokens_multiple=32, **_LUMINA), (16, 8, 8), 32),
}


class RecordingCache(BlockCachePatch):
    """The block cache, noting which (step, block) it skipped and what the run's ledger counted."""

    def __init__(self, config: BlockCacheConfig):
        super().__init__(config)
        self.skipped: set[tuple[int, int]] = set()
        self.ledger = None

    def around_block(self, run, ctx, call, run_block):
        computed = []

        def tracked(args):
            computed.append(True)
            return run_block(args)

        out = super().around_block(run, ctx, call, tracked)
        if not computed:
            self.skipped.add((ctx.step, call.position))
        return out

    def on_run_end(self, run):
        self.ledger = (run.ledger.blocks_run, run.ledger.blocks_total)
        return super().on_run_end(run)


class DropSkipped(DiTPatch):
    """The no-reuse alternative: the same (step, block) pairs skipped, their block treated as identity."""

    name = "drop_skipped"

    def __init__(self, skipped: set[tuple[int, int]]):
        self.skipped = skipped

    def around_block(self, run, ctx, call, run_block):
        if (ctx.step, call.position) in self.skipped:
            return {k: call.args[k] for k in call.stream_keys}
        return run_block(call.args)


def _patcher(name: str, spec: Spec | None = None):
    """A ModelPatcher around the family's tiny model (`spec` overrides SPECS[name], e.g. another depth)."""
    import comfy.model_patcher
    import comfy.supported_models
    spec = spec or SPECS[name]
    try:
        config = getattr(comfy.supported_models, spec.config)(dict(spec.unet))
        config.set_inference_dtype(torch.float32, None)
        model = config.get_model({})
    except (AttributeError, ImportError, TypeError) as err:  # a family (or constructor) newer than this ComfyUI
        pytest.skip(f"{name} cannot be built in this ComfyUI: {type(err).__name__}: {err}")
    torch.manual_seed(0)
    for p in model.diffusion_model.parameters():
        p.data.normal_(0, spec.init_std or INIT_STD.get(name, 0.05))
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def _sample(model, name: str, spec: Spec | None = None) -> torch.Tensor:
    import comfy.nested_tensor
    import nodes
    spec = spec or SPECS[name]
    g = torch.Generator().manual_seed(1)

    def cond():
        extra = {k: v if isinstance(v, (torch.Tensor, list)) else torch.randn(v, generator=g)
                 for k, v in spec.cond.items()}
        return [[torch.randn(1, 5, spec.context_dim, generator=g), extra]]

    positive, negative = cond(), cond()
    if spec.latent is None:  # LTX-2: video (128 channels) and audio (8 channels x 16 bins) latents together
        latent = comfy.nested_tensor.NestedTensor((torch.zeros(1, 128, 2, 4, 4), torch.zeros(1, 8, 4, 16)))
    else:
        latent = torch.zeros(1, *spec.latent)
    samples = {"samples": latent}
    if spec.noise_mask is not None:
        mask = spec.noise_mask
        samples["noise_mask"] = comfy.nested_tensor.NestedTensor(mask) if isinstance(mask, tuple) else mask
    out = nodes.common_ksampler(model, 0, STEPS, CFG, "euler", "simple", positive, negative, samples)[0]["samples"]
    parts = out.tensors if hasattr(out, "tensors") else [out]
    return torch.cat([p.flatten() for p in parts])


def _relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    return float((x - reference).norm() / reference.norm())


@pytest.mark.parametrize("name", sorted(SPECS))
def test_block_cache_through_the_sampler_on_every_family(name, comfy_root, caplog):
    from dit_accel.nodes.comfy.patcher import apply_patch
    patcher = _patcher(name)
    full = _sample(patcher, name)
    cache = RecordingCache(BlockCacheConfig(gate="static", interval=2, warmup_steps=1, final_steps=1))
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        cached = _sample(apply_patch(patcher, cache), name)
    run, total = cache.ledger
    assert 0 < run < total and cache.skipped
    summary = [r.getMessage() for r in caplog.records if "blockcache" in r.getMessage()]
    assert len(summary) == 1
    counted = re.search(r"computed (\d+)/(\d+) block evaluations", summary[0])
    assert counted and int(counted[1]) < int(counted[2]), summary[0]
    dropped = _sample(apply_patch(patcher, DropSkipped(cache.skipped)), name)
    cached_error, dropped_error = _relative_error(cached, full), _relative_error(dropped, full)
    print(f"{name}: ledger {run}/{total} blocks, relative error cached {cached_error:.2e} vs skipped without "
          f"reuse {dropped_error:.2e}")
    assert torch.isfinite(cached).all()
    assert cached_error < dropped_error
    diffusion_model = patcher.get_model_object("diffusion_model")
    if adapter_for(diffusion_model).object_patches(diffusion_model):
        # The clones patched the shared model's layers while loaded: the plain MODEL must sample as before.
        assert torch.equal(_sample(patcher, name), full)


@pytest.mark.parametrize("name", ["flux", "hunyuan_video", "wan"])
def test_span_granularity_skips_only_the_last_block_kind(name, comfy_root):
    """granularity "span" (the memory budget's rung for models with several block kinds): the single blocks are
    skipped as one span with one residual, the double blocks always run; closer to full compute than skipping the
    same blocks without reuse. On a one-kind model (Wan) it is exactly "stack"."""
    from dit_accel.nodes.comfy.patcher import apply_patch
    patcher = _patcher(name)
    full = _sample(patcher, name)
    settings = dict(gate="static", interval=2, warmup_steps=1, final_steps=1)
    cache = RecordingCache(BlockCacheConfig(granularity="span", **settings))
    spanned = _sample(apply_patch(patcher, cache), name)
    if name == "wan":
        stack = _sample(apply_patch(patcher, BlockCachePatch(BlockCacheConfig(granularity="stack", **settings))), name)
        assert torch.equal(spanned, stack) and cache.skipped
        return
    depth = SPECS[name].unet["depth"]  # the double blocks come first in the block loop
    assert cache.skipped and all(position >= depth for _, position in cache.skipped), sorted(cache.skipped)
    skipped_steps = {step for step, _ in cache.skipped}
    total = depth + SPECS[name].unet["depth_single_blocks"]
    assert cache.skipped == {(step, p) for step in skipped_steps for p in range(depth, total)}
    dropped = _sample(apply_patch(patcher, DropSkipped(cache.skipped)), name)
    assert torch.isfinite(spanned).all()
    assert _relative_error(spanned, full) < _relative_error(dropped, full)
