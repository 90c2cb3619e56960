"""DiT Quantize and DiT Save Quantized Model in real ComfyUI: core format, plain-ComfyUI loading, LoRA."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors import safe_open

from dit_accel.reference.conditioning import UNCONDITIONAL, label_context


def _sample(model, seed=3, steps=4, digits=(3, 7)):
    import nodes
    positive = [[label_context(list(digits)), {}]]
    negative = [[label_context([UNCONDITIONAL] * len(digits)), {}]]
    latent = {"samples": torch.zeros(len(digits), 16, 1, 32, 32)}
    return nodes.common_ksampler(model, seed, steps, 4.0, "euler", "simple", positive, negative,
                                 latent)[0]["samples"]


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def quantized(reference_patcher, comfy_root):
    from dit_accel.nodes.quantize_node import quantize_model
    return quantize_model(reference_patcher, "w8a8-convrot")


def _formats(patcher) -> set[str]:
    import comfy.quant_ops
    dm = patcher.model.diffusion_model
    return {getattr(m, "quant_format", None) for m in dm.modules()
            if isinstance(getattr(m, "weight", None), comfy.quant_ops.QuantizedTensor)}


def test_quantize_node_uses_core_format_and_keeps_16bit_parts(quantized, reference_patcher, node_registry):
    from dit_accel.nodes.quantize_node import core_has_int8
    assert "DiTAccelQuantize" in node_registry and "DiTAccelSaveQuantized" in node_registry
    assert _formats(quantized) == ({"int8_tensorwise"} if core_has_int8() else {"float8_e4m3fn"})
    dm = quantized.model.diffusion_model
    n_quant = sum(1 for k in dm.state_dict() if k.endswith(".comfy_quant"))
    assert n_quant == 8 * 10                                 # every block linear
    assert not any(k.startswith(("head.", "text_embedding", "time_")) and k.endswith("comfy_quant")
                   for k in dm.state_dict())
    ref, out = _sample(reference_patcher), _sample(quantized)
    assert not torch.equal(ref, out)                         # it really is quantized
    assert _rel(out, ref) < 0.1                              # and close to the 16-bit model (measured ~1-3%)


def test_fallback_warns_once_without_int8(reference_patcher, caplog):
    from dit_accel.nodes import quantize_node
    if quantize_node.core_has_int8():
        pytest.skip("this ComfyUI has INT8 W8A8; the fp8 fallback is exercised on ComfyUI 0.8.0")
    from dit_accel.kernels.logs import forget_warnings
    forget_warnings(quantize_node.NO_INT8_WARNING)
    with caplog.at_level(logging.WARNING, logger="dit_accel"):
        quantize_node.quantize_model(reference_patcher, "w8a8-convrot")
        quantize_node.quantize_model(reference_patcher, "w8a8-convrot")
    assert sum("predates INT8" in r.message for r in caplog.records) == 1


def test_saved_file_loads_with_core_loader_and_gives_the_same_images(quantized, tmp_path):
    import comfy.sd
    from dit_accel.nodes.quantize_node import save_quantized
    path = save_quantized(quantized, str(tmp_path / "q.safetensors"))
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["dit_accel_quant"])["format_version"] == 1
    loaded = comfy.sd.load_diffusion_model(path)             # what UNETLoader calls: core code only
    assert _formats(loaded) == _formats(quantized)
    assert torch.equal(_sample(loaded), _sample(quantized))


def test_quantizing_twice_is_refused(quantized):
    from dit_accel.nodes.quantize_node import quantize_model
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(quantized)


def test_save_refuses_a_model_that_was_not_quantized(reference_patcher, tmp_path):
    from dit_accel.nodes.quantize_node import save_quantized
    with pytest.raises(ValueError, match="quantize it first"):
        save_quantized(reference_patcher, str(tmp_path / "x.safetensors"))


def lora_weights() -> dict[str, torch.Tensor]:
    """A rank-4 LoRA on every block's first FFN linear and attention output, in ComfyUI's key format."""
    from dit_accel.reference.lora import random_lora
    return random_lora()


def assert_lora_matches_16bit(reference_patcher, quantized, with_lora, sample=_sample):
    """The LoRA changes the picture, does so on the quantized model too, and quantized + LoRA stays as close to
    16-bit + LoRA as quantization alone is to 16-bit (stated tolerance: twice that, plus 2 %). Returns the quantized
    model's sample without the LoRA."""
    ref, ref_lora = sample(reference_patcher), sample(with_lora(reference_patcher))
    q, q_lora = sample(quantized), sample(with_lora(quantized))
    effect = _rel(ref_lora, ref)
    assert effect > 0.05
    assert _rel(q_lora, q) > 0.5 * effect
    assert _rel(q_lora, ref_lora) < 2 * _rel(q, ref) + 0.02
    return q


def test_lora_after_quantization_takes_effect_and_matches_16bit_lora(quantized, reference_patcher, tmp_path):
    import comfy.sd
    lora = lora_weights()
    with_lora = lambda m: comfy.sd.load_lora_for_models(m, None, lora, 1.0, 0.0)[0]  # noqa: E731 - LoraLoaderModelOnly
    assert_lora_matches_16bit(reference_patcher, quantized, with_lora)


def test_scheme_names_say_which_grid_they_write(reference_patcher, tmp_path):
    """uniform-w* write the evenly spaced grid (and say so in the file's header); twin-log schemes exist only at the
    bit widths where TLQ beats it (TLQ_BITS)."""
    from dit_accel.accel.quant.serialize import read_header
    from dit_accel.accel.quant.twin_log import uniform_codebook
    from dit_accel.nodes.quantize_node import DEFAULT_SCHEME, SCHEMES, TLQ_BITS, quantize_model, save_quantized
    codebook_schemes = {name: spec.config(64) for name, spec in SCHEMES.items() if name.startswith(("uniform", "tlq"))}
    uniform = {n for n, c in codebook_schemes.items() if c.codebook == "uniform"}
    assert uniform == {f"uniform-w{b}" for b in (3, 4, 6, 8)}
    assert {n for n, c in codebook_schemes.items() if c.codebook == "twin_log"} == {f"tlq-w{b}" for b in TLQ_BITS}
    assert DEFAULT_SCHEME in SCHEMES
    quantized = quantize_model(reference_patcher, "uniform-w4")
    layers = [m for m in quantized.model.diffusion_model.modules() if hasattr(getattr(m, "weight", None), "_params")]
    assert len(layers) == 8 * 10
    assert all(torch.equal(m.weight._params.codebook, uniform_codebook(4)) for m in layers)
    path = save_quantized(quantized, str(tmp_path / "u4.safetensors"))
    with safe_open(path, "pt") as f:
        assert read_header(f.metadata()).codebook == "uniform"


def test_log_counts_the_whole_model_before_and_after(reference_patcher, caplog):
    import re

    from dit_accel.nodes.quantize_node import quantize_model
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        quantize_model(reference_patcher, "uniform-w4")
    line = next(r.getMessage() for r in caplog.records if "whole model" in r.getMessage())
    before, after = map(float, re.search(r"whole model ([\d.]+) MiB -> ([\d.]+) MiB", line).groups())
    linear_before, linear_after = map(float, re.search(r"linear weights ([\d.]+) MiB -> ([\d.]+) MiB", line).groups())
    # The whole model is counted in the dtype it was loaded in (fp32 here), the linears against 16 bits: the model
    # shrinks by at least what the linears do, and what remains holds at least the quantized linears.
    assert linear_after <= after < before
    assert before - after >= linear_before - linear_after - 0.1
