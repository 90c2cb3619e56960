"""Sparse attention through every family adapter on ComfyUI's own model classes (tiny random configs): the full mask
equals the unpatched model (SDPA), the sparse route is really taken (not a silent dense fallback), and a sparse
policy stays finite with text tokens kept dense."""
from __future__ import annotations

import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.host import RUN_KEY, AccelHost
from dit_accel.accel.sparse import SparseAttentionConfig, SparseAttentionPatch
from dit_accel.accel.sparse.patch import REFERENCE

from test_families import FAMILIES, _build, _forward, _host_options

# The tiny models have 16-32 image tokens: blocks of 4 give the policies something to choose from (the torch
# reference takes any block size; the Triton kernel's 16..256 only matters on GPU).
TINY = dict(block_size=4, warmup_steps=0)


def _run(model, inputs, config):
    host = AccelHost(adapter_for(model), (SparseAttentionPatch(config),))
    to = _host_options(host, model)
    run = to[RUN_KEY]
    with torch.no_grad():
        out = _forward(model, inputs, 0.75, to)
    lines = host.end_run(run)
    return out, run, lines


def _wan():
    from comfy.ldm.wan.model import WanModel
    import comfy.ops
    m = WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=8, in_dim=4, dim=64, ffn_dim=128, freq_dim=32,
                 text_dim=32, out_dim=4, num_heads=4, num_layers=2, operations=comfy.ops.disable_weight_init,
                 dtype=torch.float32, device="cpu")
    return m, dict(x=torch.randn(2, 4, 2, 8, 8), context=torch.randn(2, 8, 32)), {"block": 2}


ALL = {**FAMILIES, "wan": _wan}
# Families whose image tokens the patch can place in a joint sequence (the others stay dense, which must be exact too).
PLACED = {"wan", "flux", "chroma", "qwen_image", "hunyuan_video", "sd3", "ltxv"}


def _model(name):
    if name != "wan":
        return _build(name)
    torch.manual_seed(0)
    model, inputs, blocks = _wan()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return model.eval().requires_grad_(False), inputs, blocks


@pytest.mark.parametrize("name", sorted(ALL))
def test_full_mask_equals_sdpa_through_every_family(name, comfy_root):
    model, inputs, _ = _model(name)
    with torch.no_grad():
        expected = _forward(model, inputs, 0.75, {})
    out, run, lines = _run(model, inputs, SparseAttentionConfig(policy="dense", sparsity=0.0, **TINY))
    # fp32 block-wise softmax vs ComfyUI's SDPA: rounding only.
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    if name in PLACED:
        assert f"{REFERENCE} " in lines[0], lines  # the block-sparse route ran (on CPU: its torch reference)
    assert run.metrics["attention_sparsity"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("name", sorted(PLACED))
def test_sparse_policy_skips_work_and_stays_close_on_every_family(name, comfy_root):
    model, inputs, _ = _model(name)
    with torch.no_grad():
        expected = _forward(model, inputs, 0.75, {})
    out, run, lines = _run(model, inputs, SparseAttentionConfig(policy="pisa", sparsity=0.5, **TINY))
    assert torch.isfinite(out).all()
    assert 0.05 < run.metrics["attention_sparsity"] < 0.6, lines
    error = float((out - expected).norm() / expected.norm())
    assert error < 0.5, error


def test_dense_warmup_and_dense_layers_are_routed_and_counted(comfy_root):
    model, inputs, _ = _model("flux")
    out, run, lines = _run(model, inputs, SparseAttentionConfig(policy="pisa", block_size=4, warmup_steps=0,
                                                                dense_layers=(0, 1, 2, 3)))
    assert "dense layer" in lines[0] and REFERENCE not in lines[0]
    assert run.metrics["attention_sparsity"] == 0.0
    out, run, lines = _run(model, inputs, SparseAttentionConfig(policy="pisa", block_size=4, warmup_steps=3))
    assert "dense warm-up" in lines[0]  # sigma 0.75 is step 1 of the 4-step schedule
