"""Quantized state dicts: ComfyUI's comfy_quant layout, the versioned header, reload equality and clear errors."""
from __future__ import annotations

import json

import pytest
import torch

from dit_accel.accel.quant import Int8Config, WeightOnlyConfig
from dit_accel.accel.quant.serialize import (HEADER_KEY, decode_layer_conf, encode_layer_conf, fp8_state_dict, header,
                                             load_quantized_, quantize_state_dict, read_header)
from dit_accel.reference.wan_dit import WanConfig, WanDiT


def _fresh(seed=0):
    torch.manual_seed(seed)
    model = WanDiT(WanConfig(num_layers=2, ffn_dim=256)).eval().requires_grad_(False)
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return model


def _run(model):
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 16, 1, 8, 8, generator=gen), torch.rand(2, generator=gen)
    return model(x, t, torch.randn(2, 3, 4096, generator=gen) * 0.1, {})


@pytest.mark.parametrize("config", [Int8Config.convrot(), WeightOnlyConfig(bits=3, group_size=32,
                                                                           codebook="uniform")])
def test_state_dict_roundtrip_is_bit_identical(config):
    model = _fresh()
    state = quantize_state_dict(model.state_dict(), config)
    conf = decode_layer_conf(state["blocks.0.ffn.0.comfy_quant"])
    if isinstance(config, Int8Config):
        assert conf == {"format": "int8_tensorwise", "convrot": True, "convrot_groupsize": 256}
        assert state["blocks.0.ffn.0.weight"].dtype == torch.int8
        assert state["blocks.0.ffn.0.weight_scale"].shape == (256, 1)
    else:
        assert conf["format"] == "dit_accel_tlq3" and conf["bits"] == 3 and conf["group_size"] == 32
    assert "head.head.weight" in state and state["head.head.weight"].dtype == torch.float32   # untouched
    a = load_quantized_(_fresh(1), state, header(config))
    b = load_quantized_(_fresh(2), state, header(config))
    assert torch.equal(_run(a), _run(b))                  # depends only on the file, not the model it fills


def test_legacy_codebook_format_name_still_loads():
    """Format-version-1 files written before the per-bits names said "dit_accel_codebook"; they load the same."""
    config = WeightOnlyConfig(bits=4)
    state = quantize_state_dict(_fresh().state_dict(), config)
    legacy = dict(state)
    for key in [k for k in state if k.endswith(".comfy_quant")]:
        conf = decode_layer_conf(state[key])
        legacy[key] = encode_layer_conf({**conf, "format": "dit_accel_codebook"})
    assert torch.equal(_run(load_quantized_(_fresh(1), legacy, header(config))),
                       _run(load_quantized_(_fresh(1), state, header(config))))


def test_header_errors_are_clear():
    with pytest.raises(ValueError, match="no 'dit_accel_quant' header"):
        read_header({})
    newer = {HEADER_KEY: json.dumps({"format_version": 99, "config": {"type": "Int8Config"}})}
    with pytest.raises(ValueError, match="version 99 is not supported"):
        read_header(newer)


def test_shape_mismatch_names_the_layer():
    state = quantize_state_dict(_fresh().state_dict(), WeightOnlyConfig(bits=4, group_size=32, codebook="uniform"))
    wider = WanDiT(WanConfig(num_layers=2, ffn_dim=512)).eval()
    with pytest.raises(ValueError, match=r"blocks\.0\.ffn\.0.*needs"):
        load_quantized_(wider, state, header(WeightOnlyConfig()))
    state.pop("blocks.1.self_attn.q.weight_scale")
    with pytest.raises(ValueError, match="missing 'blocks.1.self_attn.q.weight_scale'"):
        load_quantized_(_fresh(), state, header(WeightOnlyConfig()))


def test_fp8_fallback_bounds_relative_error():
    state = _fresh().state_dict()
    out = fp8_state_dict(state)
    w = state["blocks.0.ffn.2.weight"]
    back = out["blocks.0.ffn.2.weight"].float() * out["blocks.0.ffn.2.weight_scale"]
    assert out["blocks.0.ffn.2.weight"].dtype == torch.float8_e4m3fn
    # e4m3 keeps 3 mantissa bits: relative error at most 2**-4 above the subnormal range
    normal = w.abs() > out["blocks.0.ffn.2.weight_scale"] * 2 ** -6
    assert bool(((back - w).abs()[normal] <= w.abs()[normal] * 2 ** -4 * 1.001).all())
