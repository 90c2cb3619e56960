"""DiT Quantize calibration in real ComfyUI: a few core sampling steps on the user's prompt feed GPTQ, the
result is closer to the 16-bit model than data-free TLQ, and the memory-bounded passes change nothing."""
from __future__ import annotations

import logging

import pytest
import torch
from test_quant_nodes import _rel, _sample

from dit_accel.reference.conditioning import UNCONDITIONAL, label_context


def _prompts(digits=(1, 4, 8)):
    positive = [[label_context(list(digits)), {}]]
    negative = [[label_context([UNCONDITIONAL] * len(digits)), {}]]
    return positive, negative, {"samples": torch.zeros(len(digits), 16, 1, 32, 32)}


@pytest.fixture(scope="module")
def calibration_stats(reference_patcher):
    from dit_accel.nodes.quant_calibration import calibrate
    positive, negative, latent = _prompts()
    return calibrate(reference_patcher, positive, negative, latent, steps=3, cfg=4.0)


def test_calibration_sees_every_block_linear_with_its_gram(calibration_stats, reference_patcher):
    from dit_accel.accel.quant.api import target_layers
    layers = target_layers(reference_patcher.model.diffusion_model)
    assert set(calibration_stats) == {name for name, _ in layers}
    # 3 steps x (cond + uncond) x 3 images x 256 tokens reach every self-attention projection
    assert calibration_stats["blocks.0.self_attn.q"].tokens == 3 * 2 * 3 * 256
    for name, linear in layers:
        assert calibration_stats[name].gram.shape == (linear.in_features, linear.in_features)


def test_calibrated_weights_are_closer_to_16bit_than_data_free(calibration_stats, reference_patcher, caplog):
    from dit_accel.nodes.quantize_node import quantize_model
    ref = _sample(reference_patcher, seed=11)    # other seeds and digits than the calibration prompt
    data_free = _sample(quantize_model(reference_patcher, "tlq-w3"), seed=11)
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        calibrated = _sample(quantize_model(reference_patcher, "tlq-w3", calibration=calibration_stats), seed=11)
    assert "GPTQ-calibrated" in caplog.text
    assert _rel(calibrated, ref) < 0.8 * _rel(data_free, ref)   # measured ~0.67 (3-bit, 3 calibration steps)


def test_node_calibrates_in_memory_bounded_passes_with_the_same_result(reference_patcher, monkeypatch, caplog):
    from dit_accel.accel.quant.api import target_layers
    from dit_accel.accel.quant.calibration import gram_passes
    from dit_accel.nodes import quant_calibration
    from dit_accel.nodes.quantize_node import DiTQuantize
    positive, negative, latent = _prompts(digits=(2,))
    one_pass = quant_calibration.calibrate(reference_patcher, positive, negative, latent, steps=2, cfg=4.0)
    budget = 24 << 20  # the reference model's Gram matrices take ~52 MiB: a few passes
    layers = [(n, m.in_features) for n, m in target_layers(reference_patcher.model.diffusion_model)]
    expected_passes = len(gram_passes(layers, budget))
    assert expected_passes > 1
    monkeypatch.setattr(quant_calibration, "DEFAULT_GRAM_BUDGET", budget)
    runs = []
    real_sampler = quant_calibration.run_ksampler
    monkeypatch.setattr(quant_calibration, "run_ksampler", lambda *a: runs.append(1) or real_sampler(*a))
    passes = quant_calibration.calibrate(reference_patcher, positive, negative, latent, steps=2, cfg=4.0)
    assert len(runs) == expected_passes
    for name in ("blocks.0.self_attn.q", "blocks.7.ffn.2"):   # each pass saw the same activations as one pass
        torch.testing.assert_close(passes[name].gram, one_pass[name].gram)
    runs.clear()
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        model = DiTQuantize.execute(reference_patcher, "uniform-w4", 64, positive, negative, latent,
                                    calibration_steps=2, calibration_cfg=4.0).result[0]
    assert len(runs) == expected_passes and "passes" in caplog.text and "GPTQ-calibrated" in caplog.text
    assert _rel(_sample(model), _sample(reference_patcher)) < 0.1


def test_calibration_needs_a_latent_with_the_prompt(reference_patcher):
    from dit_accel.nodes.quantize_node import DiTQuantize
    positive, negative, _ = _prompts()
    with pytest.raises(ValueError, match="latent"):
        DiTQuantize.execute(reference_patcher, "uniform-w4", 64, positive, negative, None)
