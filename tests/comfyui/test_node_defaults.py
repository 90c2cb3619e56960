"""Every MODEL -> MODEL node of the pack at its default inputs (read from the node's schema), through core's KSampler
(`nodes.common_ksampler`), on every family's tiny config (`test_family_sampling.SPECS`: ComfyUI's own model configs
with random weights), on the bundled reference model and on Wan-format models of other depths than the reference's
8 blocks (the tiny `wan` spec has 3, `wan_12` 12): nothing a user can drop onto a canvas fails at its defaults.

Each run must complete with a finite sample of the unpatched model's shape and log the node's summary line. Caching
and forecasting also run a few-step schedule (a distilled model's), where their line must be the documented refusal
("schedule is too short") and the sample the unpatched one; on 10 steps no node may refuse.
"""
from __future__ import annotations

import logging

import pytest
import torch
from test_family_sampling import SPECS, Spec, _patcher

# The pack's MODEL -> MODEL nodes by id (display names may change); test_the_list_is_complete keeps it honest.
NODE_IDS = ("DiTAccelBlockCache", "DiTAccelForecast", "DiTAccelSparseAttention", "DiTAccelHeadGuidance",
            "DiTAccelQuantize")
# MODEL -> MODEL nodes whose defaults are exercised elsewhere (why beside each).
COVERED_ELSEWHERE = {"DiTAccelMultiGPU": "starts worker processes; run at its defaults through KSampler in "
                                         "test_multi_gpu.py"}
SKIPPING = ("DiTAccelBlockCache", "DiTAccelForecast")  # methods that skip steps: a short schedule leaves them none
# A distilled model's few steps (the defaults' warm-up and final step leave caching none to reuse on 2; on 3 it
# reuses one); the shortest schedule every method acts on (forecasting needs 10).
SHORT, LONG = 2, 10
CASES = [(node, steps) for node in NODE_IDS for steps in ((SHORT, LONG) if node in SKIPPING else (LONG,))]
# 12 Wan blocks of 2 heads x 128: a depth with no measured head preset, and head widths ComfyUI's loader can detect
# from the weights alone (the quantize node rebuilds its model that way; the tiny specs' 16-wide heads it cannot).
WAN_12 = Spec(SPECS["wan"].config, {**SPECS["wan"].unet, "dim": 256, "ffn_dim": 256, "num_heads": 2,
                                    "num_layers": 12}, SPECS["wan"].latent, SPECS["wan"].context_dim)
MODELS = (*sorted(SPECS), "reference", "wan_12")
REFUSAL = "schedule is too short"


def _execute(registry, node_id, **kwargs):
    out = registry[node_id].execute(**kwargs)
    return out.args if hasattr(out, "args") else out


def _defaults(registry, node_id) -> dict:
    """The node's inputs at their schema defaults, the model left out; optional inputs without one stay unset."""
    from comfy_api.latest import io
    schema = registry[node_id].define_schema()
    inputs = [*schema.inputs]
    model_inputs = [i for i in inputs if isinstance(i, io.Model.Input)]
    assert [i.id for i in model_inputs] == ["model"], f"{node_id}: expected one MODEL input named 'model'"
    return {i.id: i.default for i in inputs if i not in model_inputs and getattr(i, "default", None) is not None}


@pytest.fixture(scope="module")
def models(node_registry, reference_patcher):
    """name -> (ModelPatcher, positive, negative, empty latent), each built on first use."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = _build(node_registry, reference_patcher, name)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def plain_samples(models):
    """(model name, steps) -> the unpatched sample, sampled once."""
    cache = {}

    def get(name, steps):
        if (name, steps) not in cache:
            cache[name, steps] = _sample(*models(name), steps)
        return cache[name, steps]

    return get


def _build(registry, reference_patcher, name):
    if name == "reference":
        labels = [_execute(registry, "DiTAccelDigitLabel", digit=d)[0] for d in ("3", "unconditional")]
        latent = _execute(registry, "DiTAccelDigitEmptyLatent", size=32, batch_size=1)[0]  # 8 x 8 latent
        return reference_patcher, labels[0], labels[1], latent
    spec = WAN_12 if name == "wan_12" else SPECS[name]
    patcher = _patcher(name, spec)
    g = torch.Generator().manual_seed(1)

    def cond():
        extra = {k: v if isinstance(v, torch.Tensor) else torch.randn(v, generator=g) for k, v in spec.cond.items()}
        return [[torch.randn(1, 5, spec.context_dim, generator=g), extra]]

    if spec.latent is None:  # LTX-2: video and audio latents together
        import comfy.nested_tensor
        latent = comfy.nested_tensor.NestedTensor((torch.zeros(1, 128, 2, 4, 4), torch.zeros(1, 8, 4, 16)))
    else:
        latent = torch.zeros(1, *spec.latent)
    return patcher, cond(), cond(), {"samples": latent}


def _sample(model, positive, negative, latent, steps):
    import nodes
    out = nodes.common_ksampler(model, 0, steps, 3.0, "euler", "simple", positive, negative, latent)[0]["samples"]
    return out.tensors if hasattr(out, "tensors") else [out]


def test_the_list_is_complete(node_registry):
    """Every node of the pack that takes a MODEL and returns one is in NODE_IDS (a new node joins this test)."""
    from comfy_api.latest import io

    from dit_accel.nodes.extension import NODE_MODULES
    found = set()
    for node in (n for module in NODE_MODULES for n in module.NODES):
        schema = node.define_schema()
        takes = any(isinstance(i, io.Model.Input) and not getattr(i, "optional", False) for i in schema.inputs)
        gives = any(isinstance(o, io.Model.Output) for o in schema.outputs)
        if takes and gives:
            found.add(schema.node_id)
    assert found == set(NODE_IDS) | set(COVERED_ELSEWHERE)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("node_id,steps", CASES, ids=[f"{n}-{s}steps" for n, s in CASES])
def test_node_at_its_defaults(node_registry, models, plain_samples, node_id, steps, model_name, caplog):
    model, positive, negative, latent = models(model_name)
    plain = plain_samples(model_name, steps)
    settings = _defaults(node_registry, node_id)
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        patched = _execute(node_registry, node_id, model=model, **settings)[0]
        out = _sample(patched, positive, negative, latent, steps)
    assert [o.shape for o in out] == [p.shape for p in plain]
    assert all(torch.isfinite(o).all() for o in out)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("dit_accel")]
    assert lines, f"{node_id} logged nothing on {model_name}"
    refused = [line for line in lines if REFUSAL in line]
    if node_id in SKIPPING and steps == SHORT:
        assert refused, lines  # the documented refusal, and nothing was skipped:
        assert all(torch.equal(o, p) for o, p in zip(out, plain))
    else:
        assert not refused, refused
    if node_id == "DiTAccelQuantize":  # the same architecture, rebuilt with quantized block linears
        import comfy.quant_ops
        source, rebuilt = model.model.model_config, patched.model.model_config
        assert type(rebuilt) is type(source)
        # Every entry the source's config sets (core's detection may add defaults of its own).
        assert {k: rebuilt.unet_config.get(k) for k in source.unet_config if k != "dtype"} == \
            {k: v for k, v in source.unet_config.items() if k != "dtype"}
        assert any(isinstance(p, comfy.quant_ops.QuantizedTensor) for p in patched.model.diffusion_model.parameters())
    if node_id == "DiTAccelHeadGuidance":  # the line says where the heads came from
        expected = "preset 'reference-digits'" if model_name == "reference" else "every head of the middle block"
        assert any(expected in line for line in lines), lines
    print(f"{node_id} on {model_name}, {steps} steps: {lines[-1]}")
