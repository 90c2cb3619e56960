"""The DiT Sparse Attention node on the reference model through ComfyUI's sampler: exact at the full mask, logs its
routes, chains onto an attention override that was installed before it, and composes with the block cache."""
from __future__ import annotations

import logging

import pytest
import torch

from test_nodes import CUSTOM_OFF, _execute, _graph

CUSTOM = dict(speed="custom", policy="dense", sparsity=0.0, warmup_steps=0, top_p=0.0, dense_layers="",
              block_size="16")


def _psnr(a, b):
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def test_full_mask_equals_the_unpatched_model(node_registry):
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    plain, _ = _graph(node_registry, model, steps=4)
    sparse = _execute(node_registry, "DiTAccelSparseAttention", model=model, **CUSTOM)[0]
    out, _ = _graph(node_registry, sparse, steps=4)
    torch.testing.assert_close(out["samples"], plain["samples"], rtol=1e-4, atol=1e-4)


def test_pisa_preset_skips_half_the_attention_and_logs_routes(node_registry, caplog):
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    _, full = _graph(node_registry, model, steps=8)
    sparse = _execute(node_registry, "DiTAccelSparseAttention", model=model,
                      **{**CUSTOM, "policy": "pisa", "sparsity": 0.5, "warmup_steps": 1})[0]
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        _, images = _graph(node_registry, sparse, steps=8)
    line = next(r.getMessage() for r in caplog.records if "sparse attention (" in r.getMessage())
    assert "dense warm-up" in line and "reference fallback" in line and "dense cross-attention" in line
    skipped = float(line.split("): ")[1].split("%")[0])
    assert 30 < skipped < 50  # 7 of 8 steps at 50 %
    assert _psnr(images, full) > 18  # measured 23.8 dB; an unrelated digit scores ~10


def test_chains_onto_an_attention_override_installed_before_it(node_registry):
    """A prior override (a Sage patch, core's sparse attention...) keeps running for every call we leave dense."""
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    seen = []

    def prior(func, *args, **kwargs):
        seen.append(args[0].shape)
        return func(*args, **kwargs)

    with_prior = model.clone()
    with_prior.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = prior
    plain, _ = _graph(node_registry, with_prior, steps=3)
    calls_plain = len(seen)
    seen.clear()
    sparse = _execute(node_registry, "DiTAccelSparseAttention", model=with_prior,
                      **{**CUSTOM, "policy": "pisa", "sparsity": 0.5, "warmup_steps": 1})[0]
    out, _ = _graph(node_registry, sparse, steps=3)
    # Step 0 dense (warm-up) and every cross-attention call still go through the prior override ...
    assert 0 < len(seen) < calls_plain
    # ... and the full mask goes through it for every call, with the prior's output.
    seen.clear()
    dense = _execute(node_registry, "DiTAccelSparseAttention", model=with_prior,
                     **{**CUSTOM, "policy": "dense", "warmup_steps": 3})[0]
    out, _ = _graph(node_registry, dense, steps=3)
    assert len(seen) == calls_plain
    assert torch.equal(out["samples"], plain["samples"])


def test_composes_with_the_block_cache_in_one_host(node_registry, caplog):
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    cached = _execute(node_registry, "DiTAccelBlockCache", model=model, **{**CUSTOM_OFF, "speed": "balanced"})[0]
    both = _execute(node_registry, "DiTAccelSparseAttention", model=cached,
                    **{**CUSTOM, "policy": "pisa", "sparsity": 0.5, "warmup_steps": 1})[0]
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        _, images = _graph(node_registry, both, steps=12)
    messages = [r.getMessage() for r in caplog.records]
    assert any("blockcache" in m for m in messages) and any("sparse attention (" in m for m in messages)
    assert torch.isfinite(images).all()


def test_bad_dense_layers_name_the_fix(node_registry):
    model = _execute(node_registry, "DiTAccelReferenceModelLoader")[0]
    with pytest.raises(ValueError, match="0, 1, 30-39"):
        _execute(node_registry, "DiTAccelSparseAttention", model=model, **{**CUSTOM, "dense_layers": "a-b"})
