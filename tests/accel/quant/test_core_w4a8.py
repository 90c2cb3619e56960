"""Our writer of ComfyUI core's asym_w4a8_int8 format: core decodes exactly what we chose, GPTQ lowers the layer's
output error, and each format's width rules (`for_width`)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from dit_accel.accel.quant.config import CoreW4A8Config, Int8Config, WeightOnlyConfig
from dit_accel.accel.quant.core_w4a8 import dequantize_core_w4a8, pack_nibbles, quantize_core_w4a8

needs_kitchen = pytest.mark.skipif(importlib.util.find_spec("comfy_kitchen") is None,
                                   reason="comfy-kitchen (ComfyUI's quantized-tensor library) is not installed")


def _layer(n=64, k=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen) * 0.05
    w[:, 3] *= 8                                       # a salient input channel, as in trained DiTs
    x = torch.randn(512, k, generator=gen) * (0.2 + torch.rand(k, generator=gen) * 2)
    return w, x


def _decode(out):
    return dequantize_core_w4a8(out["qdata"], out["s_rel"], out["s_channel"], out["codebook"], out["group_size"],
                                out["convrot_groupsize"])


def test_stored_dtypes_and_shapes_are_cores():
    w, _ = _layer()
    out = quantize_core_w4a8(w, CoreW4A8Config())
    assert out["qdata"].dtype == torch.int8 and out["qdata"].shape == (64, 128)
    assert out["s_rel"].dtype == torch.float8_e4m3fn and out["s_rel"].shape == (64, 16)
    assert out["s_channel"].shape == (64,) and out["codebook"].shape == (16,)


def test_nibbles_hold_the_even_column_low():
    codes = torch.tensor([[1, 2, 15, 0]])
    assert pack_nibbles(codes).view(torch.uint8).tolist() == [[0x21, 0x0F]]


@needs_kitchen
def test_core_decodes_exactly_what_we_stored():
    from comfy_kitchen.backends.eager.w4a8_int8 import dequantize_w4a8_int8_weight
    w, x = _layer()
    gram = x.T @ x / len(x)
    for config, g in ((CoreW4A8Config(), None), (CoreW4A8Config(calibration="gptq"), gram)):
        out = quantize_core_w4a8(w, config, g)
        core = dequantize_w4a8_int8_weight(out["qdata"], out["s_rel"], out["s_channel"], codebook=out["codebook"],
                                           group_size=16, convrot_groupsize=256, output_dtype=torch.float32)
        torch.testing.assert_close(core, _decode(out), rtol=0, atol=1e-6)


def test_gptq_lowers_the_output_error_the_scale_search_alone_leaves():
    w, x = _layer()
    y = x @ w.T
    err = lambda out: float((x @ _decode(out).T - y).norm() / y.norm())  # noqa: E731
    data_free = err(quantize_core_w4a8(w, CoreW4A8Config()))
    gptq = err(quantize_core_w4a8(w, CoreW4A8Config(calibration="gptq"), x.T @ x / len(x)))
    assert gptq < 0.9 * data_free
    assert data_free < 0.15                            # 4 bits: a few percent, never a broken layer


def test_gptq_without_a_gram_matrix_names_the_fix():
    with pytest.raises(ValueError, match="Gram"):
        quantize_core_w4a8(torch.randn(16, 256), CoreW4A8Config(calibration="gptq"))


def test_each_format_takes_what_fits_a_layer_width():
    assert CoreW4A8Config().for_width(1024).convrot_groupsize == 256
    assert CoreW4A8Config().for_width(64).convrot_groupsize == 64      # tiny models: a smaller rotation
    assert CoreW4A8Config().for_width(40) is None                       # not a multiple of 16: stays 16-bit
    assert WeightOnlyConfig(group_size=64).for_width(96).group_size == 32
    assert WeightOnlyConfig(group_size=64).for_width(12) is None
    assert Int8Config.convrot().for_width(64).rotation_group == 64
