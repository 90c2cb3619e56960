"""DiT Head Guidance through ComfyUI's own sampler on the reference model: exact when off, guides and reports its
cost when on, with and without CFG, validated heads, and chained with the block cache."""
from __future__ import annotations

import logging

import pytest
import torch

SETTINGS = dict(scale=2.0, alpha=1.0, heads="3:1, 5:*", start_percent=0.0, end_percent=0.6)


def _execute(registry, node_id, **kwargs):
    out = registry[node_id].execute(**kwargs)
    return out.args if hasattr(out, "args") else out


def _sample(registry, model, cfg=4.0, steps=8, digits=(3, 8)):
    import nodes
    positive = [[torch.cat([_execute(registry, "DiTAccelDigitLabel", digit=str(d))[0][0][0] for d in digits]), {}]]
    negative = _execute(registry, "DiTAccelDigitLabel", digit="unconditional")[0]
    latent = _execute(registry, "DiTAccelDigitEmptyLatent", size=128, batch_size=len(digits))[0]
    return nodes.common_ksampler(model, 5, steps, cfg, "euler", "simple", positive, negative, latent)[0]["samples"]


@pytest.fixture(scope="module")
def reference(node_registry):
    return _execute(node_registry, "DiTAccelReferenceModelLoader")[0]


def test_scale_zero_is_bit_identical(node_registry, reference):
    guided = _execute(node_registry, "DiTAccelHeadGuidance", model=reference, **{**SETTINGS, "scale": 0.0})[0]
    assert torch.equal(_sample(node_registry, reference), _sample(node_registry, guided))


@pytest.mark.parametrize("cfg", [4.0, 1.0])
def test_guidance_changes_the_sample_and_logs_its_extra_cost(node_registry, reference, caplog, cfg):
    guided = _execute(node_registry, "DiTAccelHeadGuidance", model=reference, **SETTINGS)[0]
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        out = _sample(node_registry, guided, cfg=cfg)
    plain = _sample(node_registry, reference, cfg=cfg)
    assert torch.isfinite(out).all() and not torch.allclose(out, plain, atol=1e-3)
    line = next(r.getMessage() for r in caplog.records if "softpag" in r.getMessage())
    # 8 steps, end 0.6 -> steps 0..4 guided; branch starts at layer 3 from the cond pass
    assert "perturbed branch on 5/8 steps, 5 of them starting at layer 3" in line
    extra = float(line.split("extra transformer cost +")[1].split("%")[0]) / 100
    # block evaluations x rows: 5 of 8 blocks on the cond rows on 5 of 8 steps, against 8 blocks on the cond (and
    # uncond) rows every step; a full perturbed pass on those steps would cost 5/8 x (1/2 with CFG, 1 without)
    main_rows = 2 if cfg != 1.0 else 1
    assert extra == pytest.approx((5 * 5) / (8 * 8 * main_rows), abs=0.006)


@pytest.mark.parametrize("heads,message", [("8:0", r"layers run 0\.\.7"), ("3:2", r"heads run 0\.\.1"),
                                           ("no-such-preset", "neither .auto., a preset")])
def test_heads_outside_the_model_are_refused_naming_the_range(node_registry, reference, heads, message):
    with pytest.raises(ValueError, match=message):
        _execute(node_registry, "DiTAccelHeadGuidance", model=reference, **{**SETTINGS, "heads": heads})


def test_shipped_preset_loads_on_the_reference_model(node_registry, reference):
    guided = _execute(node_registry, "DiTAccelHeadGuidance", model=reference,
                      **{**SETTINGS, "heads": "reference-digits"}, use_preset_settings=True)[0]
    assert guided is not reference


@pytest.mark.parametrize("order", ["cache_then_guidance", "guidance_then_cache"])
def test_chains_with_the_block_cache(node_registry, reference, caplog, order):
    def cache(m):
        return _execute(node_registry, "DiTAccelBlockCache", model=m, speed="balanced", threshold=1.0, gate="block",
                        granularity="stack", interval=2, start_percent=0.0, end_percent=1.0, warmup_steps=1,
                        final_steps=1, max_consecutive=2, forecast_order=2)[0]

    def guidance(m):
        return _execute(node_registry, "DiTAccelHeadGuidance", model=m, **SETTINGS)[0]

    model = guidance(cache(reference)) if order == "cache_then_guidance" else cache(guidance(reference))
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        out = _sample(node_registry, model, steps=10)
    messages = [r.getMessage() for r in caplog.records]
    assert torch.isfinite(out).all()
    assert any("softpag" in m for m in messages) and any("blockcache" in m for m in messages)


def test_every_input_has_a_tooltip(node_registry):
    from dit_accel.nodes.head_guidance_node import NODES
    for node in NODES:
        schema = node.define_schema()
        missing = [inp.id for inp in schema.inputs if not getattr(inp, "tooltip", None)]
        assert not missing, f"{schema.node_id}: inputs without a tooltip: {missing}"


def test_headhunter_node_returns_heads_for_the_guidance_node(node_registry):
    found = _execute(node_registry, "DiTAccelHeadHunter", objective="confidence", budget=2, max_heads=1, scale=2.0,
                     alpha=1.0, steps=2, seeds=1, preset_name="")[0]
    assert found in ("", "0:0", "0:1")  # a budget of 2 tries the first two heads only
