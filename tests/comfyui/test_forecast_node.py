"""DiT Forecast called the way ComfyUI calls it, on the reference model through ComfyUI's sampler."""
from __future__ import annotations

import logging

import pytest
import torch

from test_nodes import _execute, _graph, _sample_with, random_lora  # pytest puts this folder on sys.path (no package here)

SETTINGS = dict(method="taylorseer", speed="balanced", interval=5, threshold=0.05, order=1, degree=3,
                granularity="model", start_percent=0.0, end_percent=1.0, warmup_steps=1, final_steps=-1)


def _forecast(registry, model, **settings):
    return _execute(registry, "DiTAccelForecast", model=model, **{**SETTINGS, **settings})[0]


def _psnr(a, b):
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


@pytest.mark.parametrize("method", ["taylorseer", "spectrum", "cg-taylor", "spectrum-plan"])
def test_interval_one_is_bit_identical(node_registry, method):
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    plain, _ = _graph(node_registry, model)
    out, _ = _graph(node_registry, _forecast(node_registry, model, method=method, speed="custom", interval=1,
                                             threshold=0.0))
    assert torch.equal(plain["samples"], out["samples"])


def test_balanced_forecast_runs_a_quarter_of_the_calls_and_logs_it(node_registry, caplog):
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    _, images_full = _graph(node_registry, model, steps=20)
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        _, images = _graph(node_registry, _forecast(node_registry, model), steps=20)
    line = next(r.getMessage() for r in caplog.records if "taylorseer" in r.getMessage())
    assert "ran 5/20 model calls" in line and "MiB" in line
    assert _psnr(images, images_full) > 25


def test_short_schedule_says_so_and_changes_nothing(node_registry, caplog):
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    plain, _ = _graph(node_registry, model, steps=6)
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        out, _ = _graph(node_registry, _forecast(node_registry, model), steps=6)
    assert torch.equal(plain["samples"], out["samples"])
    assert any("too short to forecast" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("method, threshold", [("taylorseer", 0.05), ("cg-taylor", 1.0)])
def test_partial_denoise_several_conds_and_a_lora(node_registry, method, threshold):
    """cg-taylor at threshold 1 trusts its probe wherever it may: its early end of ComfyUI's forward is exercised."""
    import comfy.sd
    from dit_accel.reference import latent as codec
    from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    with_lora = comfy.sd.load_lora_for_models(model, None, random_lora(), 1.0, 0.0)[0]
    negative = [[label_context([UNCONDITIONAL] * 2), {}]]
    two_conds = [[label_context([3, 3]), {}], [label_context([8, 8]), {"strength": 0.5}]]
    start = {"samples": codec.encode(torch.rand(2, 1, 128, 128))}
    empty = {"samples": torch.zeros(2, 16, 1, 32, 32)}
    for base, positive, latent, denoise in ((model, two_conds, empty, 1.0),
                                            (model, [[label_context([5, 5]), {}]], start, 0.6),
                                            (with_lora, [[label_context([2, 6]), {}]], empty, 1.0)):
        plain = _sample_with(base, positive, negative, latent, steps=20, denoise=denoise)
        off = _forecast(node_registry, base, method=method, speed="custom", interval=1)
        assert torch.equal(_sample_with(off, positive, negative, latent, steps=20, denoise=denoise), plain)
        fast = _sample_with(_forecast(node_registry, base, method=method, threshold=threshold, speed="quality"),
                            positive, negative, latent, steps=20, denoise=denoise)
        assert torch.isfinite(fast).all() and _psnr(codec.decode(fast), codec.decode(plain)) > 20


def test_cg_taylor_ends_comfyuis_forward_after_the_first_block_when_it_trusts_the_forecast(node_registry, caplog):
    import re
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    _, images_full = _graph(node_registry, model, steps=20)
    gated = _forecast(node_registry, model, method="cg-taylor", threshold=1.0)
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        _, images = _graph(node_registry, gated, steps=20)
    line = next(r.getMessage() for r in caplog.records if "cg-taylor" in r.getMessage())
    trusted = re.search(r"trusted the forecast on (\d+) of (\d+) probed calls", line)
    assert trusted and int(trusted.group(1)) > 10, line   # balanced: at most 5 apart, so 15 trusted probes
    assert float(re.search(r"with the probes, ([0-9.]+)x", line).group(1)) > 2.5
    assert _psnr(images, images_full) > 20


def test_forecast_and_block_cache_refuse_to_skip_twice(node_registry):
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    cached = _execute(node_registry, "DiTAccelBlockCache", model=model, speed="balanced", threshold=1.0,
                      gate="block", granularity="stack", interval=2, start_percent=0.0, end_percent=1.0,
                      warmup_steps=1, final_steps=1, max_consecutive=2, forecast_order=2)[0]
    with pytest.raises(ValueError, match="skip twice"):
        _forecast(node_registry, cached)


def test_bad_settings_name_the_fix(node_registry):
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    with pytest.raises(ValueError, match="start_percent below end_percent"):
        _forecast(node_registry, model, start_percent=0.9, end_percent=0.1)


@pytest.mark.parametrize("family, builder, interval, warmup", [("wan", None, 5, 1), ("flux", "flux", 6, 3),
                                                                ("sd3", "sd3", 5, 1)])
def test_speed_levels_follow_the_family_preset(node_registry, monkeypatch, family, builder, interval, warmup):
    """balanced sets the family's published interval and warm-up; a family without one gets the reference levels."""
    from test_families import flux, sd3

    from dit_accel.nodes import forecast_node
    patches = []
    monkeypatch.setattr(forecast_node, "apply_patch", lambda model, patch, **_: patches.append(patch) or model)
    if builder is None:
        model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    else:
        diffusion_model = {"flux": flux, "sd3": sd3}[builder]()[0]
        model = type("Patcher", (), {"get_model_object": lambda self, name: diffusion_model})()
    forecast_node.DiTForecast.execute(model, **{**SETTINGS, "interval": 9, "warmup_steps": 7})
    config = patches[0].config
    assert (config.interval, config.warmup_steps) == (interval, warmup)   # the inputs 9 / 7 are for custom only
