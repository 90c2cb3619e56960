"""ComfyUI 0.40+ passes q/k/v to attention as `AttentionTensorContainer`s on every model (0.33 does on MiniMax-H3
only). `wrap_attn` hands an override without a `container_function` the tensors after `take()`; this test drives our
override down that path on 0.33: the Wan and Flux modules' attention calls are wrapped so they pass containers, as
the newer model files do, and sparse attention, head guidance and its branch must give the same output as without.

Our override declares no container function: it would receive the containers without the backend function (the
`func` an override is otherwise called with), and no patch of ours could free q/k/v early anyway (the attention call
keeps them for the text rows, the calibration and the perturbed heads' blend).
"""
from __future__ import annotations

import pytest
import torch

from dit_accel.accel.guidance.softpag import SoftPAGConfig
from dit_accel.accel.sparse import SparseAttentionConfig
from dit_accel.accel.sparse.patch import REFERENCE

from test_head_guidance_families import _run as softpag_run
from test_sparse_attention_families import TINY, _model
from test_sparse_attention_families import _run as sparse_run

FAMILY_MODULES = {"wan": "comfy.ldm.wan.model", "flux": "comfy.ldm.flux.math"}


@pytest.fixture
def container_calls(comfy_root, monkeypatch):
    """Switch the Wan and Flux attention call sites to containers; returns a list that counts the calls made."""
    import importlib

    from comfy.ldm.modules import attention
    if not hasattr(attention, "AttentionTensorContainer"):
        pytest.skip("this ComfyUI has no AttentionTensorContainer (added in 0.33)")
    consumed = _Calls()

    def with_containers(real):
        def call(q, k, v, *args, **kwargs):
            boxes = tuple(attention.AttentionTensorContainer(t) for t in (q, k, v))
            del q, k, v  # as the call site does: the containers are the only owners
            out = real(*boxes, *args, **kwargs)
            consumed.append(all(box.tensor is None for box in boxes))
            return out
        return call

    def enable():
        for module_name in FAMILY_MODULES.values():
            module = importlib.import_module(module_name)
            monkeypatch.setattr(module, "optimized_attention", with_containers(module.optimized_attention))
    consumed.enable = enable
    return consumed


class _Calls(list):
    """One bool per container call (were all three taken?); `enable()` switches the call sites over."""

    enable = None


def _both(run, name: str, container_calls):
    """(output without containers, output with containers) of `run(model, inputs)` on the same tiny model."""
    model, inputs, blocks = _model(name)
    plain = run(model, inputs, blocks)
    container_calls.enable()
    boxed = run(model, inputs, blocks)
    assert container_calls and all(container_calls), "the containers were not taken on every call"
    return plain, boxed


@pytest.mark.parametrize("name", sorted(FAMILY_MODULES))
def test_sparse_attention_through_containers(name, container_calls):
    config = SparseAttentionConfig(policy="pisa", sparsity=0.5, **TINY)

    def run(model, inputs, blocks):
        out, result, lines = sparse_run(model, inputs, config)
        assert f"{REFERENCE} " in lines[0], lines  # the sparse route ran, not a dense fallback
        return out

    plain, boxed = _both(run, name, container_calls)
    assert torch.equal(plain, boxed)


@pytest.mark.parametrize("name", sorted(FAMILY_MODULES))
def test_head_guidance_and_its_branch_through_containers(name, container_calls):
    def run(model, inputs, blocks):
        last = sum(blocks.values()) - 1
        # one head of one layer, soft: the head split, the identity blend and the branch's prefix reuse all act
        main, branch, _, _ = softpag_run(model, inputs, SoftPAGConfig(heads=((last, 0),), alpha=0.7))
        return main, branch

    (plain_main, plain_branch), (boxed_main, boxed_branch) = _both(run, name, container_calls)
    assert torch.equal(_flat(plain_main), _flat(boxed_main))
    assert torch.equal(_flat(plain_branch), _flat(boxed_branch))
    assert not torch.equal(_flat(boxed_branch), _flat(boxed_main[:1]))  # the branch really is perturbed


def _flat(out):
    return torch.cat([t.flatten() for t in out]) if isinstance(out, (list, tuple)) else out
