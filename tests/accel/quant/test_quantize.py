"""quantize_: what it touches, the exact 16-bit setting, and each format's dequantize(quantize(w)) error bound."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dit_accel.accel.quant import (Float16Config, Int8Config, WeightOnlyConfig, config_from_dict, quantize_,
                                   target_layers, to_dict, weight_bytes_report)
from dit_accel.accel.quant.api import int8_weight
from dit_accel.accel.quant.linear import CodebookLinear, Int8Linear
from dit_accel.accel.quant.rotation import (block_rotation, choose_rotation, ChannelStats, regular_hadamard,
                                            rotate_activation, rotate_weight)
from dit_accel.accel.quant.twin_log import (dequantize_weight, fit_twin_log, nearest_codes, quantize_weight,
                                            uniform_codebook)


def _inputs(model, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, 1, 8, 8, generator=gen)
    t = torch.rand(batch, generator=gen)
    ctx = torch.randn(batch, 3, model.cfg.text_dim, generator=gen) * 0.1
    return x, t, ctx


def test_float16_setting_leaves_model_untouched(tiny_wan):
    before = {k: v.clone() for k, v in tiny_wan.state_dict().items()}
    x, t, ctx = _inputs(tiny_wan)
    out = tiny_wan(x, t, ctx, {})
    assert quantize_(tiny_wan, Float16Config()) is tiny_wan
    after = tiny_wan.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(tiny_wan(x, t, ctx, {}), out)


def test_default_filter_keeps_embeddings_modulation_and_head(tiny_wan):
    names = [n for n, _ in target_layers(tiny_wan)]
    assert names and all(n.startswith("blocks.") for n in names)
    assert {n.split(".", 2)[2] for n in names} == {f"{a}.{p}" for a in ("self_attn", "cross_attn")
                                                  for p in "qkvo"} | {"ffn.0", "ffn.2"}
    quantize_(tiny_wan, WeightOnlyConfig(bits=4, group_size=32, codebook="uniform"))
    assert isinstance(tiny_wan.head.head, nn.Linear) and isinstance(tiny_wan.text_embedding[0], nn.Linear)
    assert isinstance(tiny_wan.time_projection[1], nn.Linear)
    assert isinstance(tiny_wan.blocks[0].ffn[0], CodebookLinear)


def test_block_filter_asks_the_adapters_and_is_anchored_at_the_root():
    from dit_accel.accel.quant.api import block_filter, default_filter, family_block_prefixes
    prefixes = family_block_prefixes()
    assert {"blocks", "double_blocks", "single_blocks", "transformer_blocks", "joint_blocks", "layers"} <= set(prefixes)
    keep = [n for n in ("layers.0.attention.qkv", "layers.11.feed_forward.w2", "double_blocks.1.img_attn.qkv",
                        "single_blocks.0.linear1", "transformer_blocks.2.attn.to_q", "joint_blocks.0.x_block.attn.qkv",
                        "blocks.7.ffn.0") if default_filter(n)]
    assert len(keep) == 7
    # Chroma's modulation network and Lumina's refiners / modulation stay 16-bit; so do norms and embeddings.
    assert not any(default_filter(n) for n in (
        "distilled_guidance_layer.layers.0.in_layer", "noise_refiner.0.attention.qkv", "layers.0.adaLN_modulation.0",
        "double_blocks.0.img_mod.lin", "x_embedder", "blocks.0.norm3"))
    assert block_filter(("layers",))("layers.0.attention.qkv") and not block_filter(("layers",))("blocks.0.ffn.0")
    assert not default_filter("blocks.0.ffn.0", nn.LayerNorm(4))   # a module that is not a linear layer


@pytest.mark.parametrize("bits", [3, 4, 6, 8])
def test_uniform_rtn_error_is_at_most_half_a_step(bits):
    w = torch.randn(32, 128, generator=torch.Generator().manual_seed(bits))
    codes, scales, cb = quantize_weight(w, bits, 64, "uniform", clip_search=False)
    err = (dequantize_weight(codes, scales, cb) - w).abs().view(32, 2, 64)
    half_step = scales.float() / (2 ** bits - 1)
    assert bool((err <= half_step.unsqueeze(-1) * 1.001 + 1e-3 * scales.float().unsqueeze(-1)).all())


@pytest.mark.parametrize("bits", [3, 4, 6, 8])
def test_twin_log_error_bounded_by_codebook_gaps_and_clipping(bits):
    w = torch.randn(32, 128, generator=torch.Generator().manual_seed(10 + bits))
    codes, scales, cb = quantize_weight(w, bits, 64, "twin_log", clip_search=True)
    assert cb.numel() == 2 ** bits and torch.all(cb[1:] > cb[:-1]) and cb.abs().max() == 1
    err = (dequantize_weight(codes, scales, cb) - w).abs().view(32, 2, 64)
    absmax = w.abs().view(32, 2, 64).amax(-1)
    inside = (cb[1:] - cb[:-1]).max() / 2 * scales.float()           # half the widest gap
    clipped = (absmax - scales.float() * cb.max()).clamp(min=0)       # saturation past the clipped scale
    bound = torch.maximum(inside, clipped) * 1.001 + 1e-3 * absmax
    assert bool((err <= bound.unsqueeze(-1)).all())


def test_twin_log_beats_uniform_on_gaussian_weights():
    """TLQ's premise: on Gaussian-like, long-tailed weights the twin-log grid has less error than an even one."""
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(3))
    for bits in (3, 4):
        errs = {}
        for kind in ("uniform", "twin_log"):
            codes, scales, cb = quantize_weight(w, bits, 64, kind, clip_search=False)
            errs[kind] = float((dequantize_weight(codes, scales, cb) - w).square().mean())
        assert errs["twin_log"] < errs["uniform"], (bits, errs)


def test_fitted_twin_log_never_worse_than_uniform_and_contains_it():
    """The even grid is the family's b1 = b2 = 1 member, so the fit can only improve on it (even on uniform data)."""
    from dit_accel.accel.quant.twin_log import signed_codebook, twin_log_magnitudes
    torch.testing.assert_close(signed_codebook(twin_log_magnitudes(8, 0.4, 1.0, 1.0)), uniform_codebook(4))
    for u in (torch.rand(4096, generator=torch.Generator().manual_seed(4)) * 2 - 1,
              torch.randn(4096, generator=torch.Generator().manual_seed(5)).clamp(-3, 3) / 3):
        cb, even = fit_twin_log(u, 4), uniform_codebook(4)
        err = {name: float((c[nearest_codes(u, c)] - u).square().mean()) for name, c in (("tlq", cb), ("u", even))}
        assert err["tlq"] <= err["u"]


def test_codebook_linear_computes_with_its_dequantized_weight():
    lin = nn.Linear(64, 24)
    codes, scales, cb = quantize_weight(lin.weight.detach(), 4, 32, "twin_log")
    q = CodebookLinear.from_codes(lin, codes, scales, cb, 4, 32)
    x = torch.randn(5, 64)
    torch.testing.assert_close(q(x), x @ q.dequantized_weight().T + lin.bias, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q.dequantized_weight(), dequantize_weight(codes, scales, cb))


def test_hadamard_is_orthogonal_and_rotation_preserves_the_linear_map():
    h = regular_hadamard(64)
    torch.testing.assert_close(h @ h, torch.eye(64), atol=1e-5, rtol=0)
    w, x = torch.randn(12, 128), torch.randn(7, 128)
    smooth = torch.rand(128) + 0.5
    for s in (None, smooth):
        rotated = rotate_activation(x, block_rotation(128, 64, s)) @ rotate_weight(w, 64, s).T
        torch.testing.assert_close(rotated, x @ w.T, atol=1e-4, rtol=1e-4)


def test_int8_weight_error_bound_and_unrotated_dequantization():
    w = torch.randn(16, 256, generator=torch.Generator().manual_seed(5))
    q, s = int8_weight(w, 64)
    err = (q.float().view(16, 4, 64) * s.unsqueeze(-1)).view(16, 256) - w
    assert bool((err.abs().view(16, 4, 64) <= s.unsqueeze(-1) / 2 * 1.0001).all())
    lin = nn.Linear(256, 16)
    lin.weight.data = w
    for config in (Int8Config.convrot(), Int8Config(rotation="hadamard")):
        qlin = quantize_(nn.Sequential(), config)  # no-op container, the filter finds nothing
        assert len(qlin) == 0
    model = nn.Module()
    model.blocks = nn.ModuleList([nn.Module()])
    model.blocks[0].proj = lin
    quantize_(model, Int8Config.convrot())
    qlin = model.blocks[0].proj
    assert isinstance(qlin, Int8Linear) and qlin.kind == "hadamard" and qlin.weight_scale.shape == (16, 1)
    # orthogonal rotation: the row-wise Frobenius error is that of the rotated int8 codes, at most sqrt(K)*s/2
    row_err = (qlin.dequantized_weight() - w).norm(dim=1)
    assert bool((row_err <= qlin.weight_scale.squeeze(1) / 2 * 256 ** 0.5 * 1.001).all())


def test_adaptive_rotation_picks_outlier_aware_only_for_salient_channels():
    mild = ChannelStats(torch.ones(64) + torch.rand(64, generator=torch.Generator().manual_seed(0)))
    salient = ChannelStats(mild.absmax.clone())
    salient.absmax[3] = 50.0
    assert choose_rotation(mild, 6.0) == "hadamard"
    assert choose_rotation(salient, 6.0) == "outlier_aware"
    assert choose_rotation(None, 6.0) == "hadamard"


def test_w4_weight_bytes_ratio(tiny_wan):
    quantize_(tiny_wan, WeightOnlyConfig(bits=4, group_size=64, codebook="uniform"))
    report = weight_bytes_report(tiny_wan)
    assert report["quantized_layers"] == 3 * 10
    assert report["weight_bytes_ratio"] == pytest.approx(16 / (4 + 16 / 64), rel=0.02)
    assert report["model_bytes_quantized"] < report["model_bytes_16bit"]


def test_config_roundtrip_and_newer_version_refused():
    for config in (Float16Config(), WeightOnlyConfig(bits=3, group_size=32), Int8Config.convrot()):
        assert config_from_dict(to_dict(config)) == config
    with pytest.raises(ValueError, match="newer"):
        config_from_dict({**to_dict(WeightOnlyConfig()), "version": 99})
    with pytest.raises(ValueError, match="power of 4"):
        Int8Config(rotation_group=128)


def test_w4a8_keeps_the_layer_close_and_has_no_file_format():
    """W4A8 = rotated TLQ weights + int8 activations: the layer's dequantized weight is the original one (the
    rotation is undone exactly) up to 4-bit error, and its output stays close; saving it is refused, not misread."""
    from dit_accel.accel.quant import CodebookA8Linear, W4A8Config
    from dit_accel.accel.quant.serialize import layer_state
    gen = torch.Generator().manual_seed(0)
    linear = nn.Linear(128, 64)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(64, 128, generator=gen) * 0.05)
    x = torch.randn(3, 7, 128, generator=gen)
    x[..., 5] *= 40                                              # one salient outlier channel
    stats = ChannelStats(x.reshape(-1, 128).abs().amax(0))
    model = nn.Sequential()
    model.add_module("blocks", nn.ModuleList([nn.ModuleDict({"ffn": linear})]))
    quantize_(model, W4A8Config(), calibration={"blocks.0.ffn": stats})
    q = model.blocks[0]["ffn"]
    assert isinstance(q, CodebookA8Linear) and q.smooth is not None          # ARS chose the outlier-aware rotation
    w = linear.weight.detach()
    w_err = float((q.dequantized_weight() - w).norm() / w.norm())
    assert w_err < 0.15
    with torch.no_grad():
        ref, out = linear(x), q(x)
    assert float((out - ref).norm() / ref.norm()) < 0.2
    with pytest.raises(ValueError, match="no file format"):
        layer_state("blocks.0.ffn.", q)


def test_least_squares_scale_refinement_never_raises_a_groups_error():
    from dit_accel.accel.quant import twin_log
    torch.manual_seed(0)
    weight = torch.randn(16, 128) * torch.linspace(0.2, 3.0, 128)   # uneven columns: absmax scales are not optimal
    codebook = twin_log.fit_twin_log(weight / weight.abs().max(), 4)
    wg = twin_log.group_view(weight, 64)
    scale = wg.abs().amax(-1).half().float()
    codes = twin_log.nearest_codes(wg / scale.unsqueeze(-1), codebook)
    err = (codebook[codes] * scale.unsqueeze(-1) - wg).square().sum(-1)
    new_codes, new_scale = twin_log._refine_scales(wg, codebook, codes, scale, err,
                                                   twin_log._channel_weight_view(None, wg))
    new_err = (codebook[new_codes] * new_scale.unsqueeze(-1) - wg).square().sum(-1)
    assert (new_err <= err).all() and new_err.sum() < err.sum()
