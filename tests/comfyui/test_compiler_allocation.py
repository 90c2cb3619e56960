"""Per-run state through the boundary's allocation scope in a real ComfyUI sampling run: the patcher hands the scope
to the host, run state is allocated under ComfyUI's compiler pause (a stand-in here: 0.33 has no compiler), and the
output is the same as without it."""
from __future__ import annotations

import contextlib

import torch

from dit_accel.accel.caching import BlockCacheConfig, BlockCachePatch
from dit_accel.accel.host import HOST_KEY
from dit_accel.nodes.comfy import allocation
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context


def _sample(model):
    import nodes
    positive, negative = [[label_context([3]), {}]], [[label_context([UNCONDITIONAL]), {}]]
    latent = {"samples": torch.zeros(1, 16, 1, 16, 16)}
    return nodes.common_ksampler(model, 5, 8, 4.0, "euler", "simple", positive, negative, latent)[0]["samples"]


def test_run_state_is_allocated_under_the_compiler_pause(reference_patcher, monkeypatch):
    from dit_accel.nodes.comfy.patcher import apply_patch
    assert allocation.compiler_present() == _has_pause()
    cached = apply_patch(reference_patcher, BlockCachePatch(BlockCacheConfig(gate="block", threshold=1.0,
                                                                             forecast_order=2)))
    assert cached.model_options["transformer_options"][HOST_KEY].allocation_scope is allocation.persistent_allocation
    plain = _sample(cached)

    pauses = []

    @contextlib.contextmanager
    def pause():
        pauses.append(True)
        yield

    monkeypatch.setattr(allocation, "_pause_malloc_graph", lambda: pause)
    assert torch.equal(_sample(cached), plain)
    assert pauses  # the block cache's stream states were made under the pause


def _has_pause() -> bool:
    """Whether this ComfyUI can pause the compiler's capture (0.33 has comfy.model_prefetch, without it)."""
    try:
        import comfy.model_prefetch
    except ImportError:
        return False
    return hasattr(comfy.model_prefetch, "pause_malloc_graph")
