"""DiT Multi-GPU composed with the other methods on every family's tiny model through KSampler (CFG 3), at world size
2 with gloo worker processes: the block cache with sparse attention, and the output forecaster, each give what one
process running the same methods gives. The family's token split is used where it has one, else mode cfg."""
from __future__ import annotations

import importlib
import logging
import re

import pytest
import test_family_sampling
import torch
from test_family_sampling import SPECS, _patcher, _sample  # noqa: E402  (the same tiny models)

from dit_accel.accel.adapters.registry import adapter_for

FORECAST_STEPS = 10  # the forecaster needs 10 or more steps to skip any


@pytest.fixture(scope="module")
def pack(node_registry):
    """The pack as ComfyUI loaded it (its module name is its folder's path): the methods must come from the same
    copy as DiT Multi-GPU's process group, as they do when the nodes build them, or their gates agree on nothing."""
    root = node_registry["DiTAccelMultiGPU"].__module__.rsplit(".nodes.", 1)[0]
    modules = {name: importlib.import_module(f"{root}.{name}") for name in (
        "accel.caching", "accel.forecasting.methods", "accel.sparse.config", "accel.sparse.patch",
        "nodes.comfy.patcher", "nodes.comfy.workers")}
    yield modules
    modules["nodes.comfy.workers"].shutdown()


def _mode(patcher) -> str | None:
    adapter = adapter_for(patcher.get_model_object("diffusion_model"))
    if adapter.sequence_layout is not None:
        return "auto"
    return "cfg" if adapter.has_model_wrapper else None


def _multi(registry, model, mode):
    out = registry["DiTAccelMultiGPU"].execute(model=model, device_count=2, mode=mode, backend="cpu", timeout_s=60.0)
    return (out.args if hasattr(out, "args") else out)[0]


def _cache_and_sparse(pack, patcher):
    apply_patch, sparse, caching = pack["nodes.comfy.patcher"].apply_patch, pack["accel.sparse.patch"], \
        pack["accel.caching"]
    config = pack["accel.sparse.config"].SparseAttentionConfig(policy="pisa", sparsity=0.5, block_size=4,
                                                                warmup_steps=0)
    cache = caching.BlockCachePatch(caching.BlockCacheConfig(gate="first_block", threshold=0.3, warmup_steps=1,
                                                             final_steps=1))
    return apply_patch(apply_patch(patcher, sparse.SparseAttentionPatch(config)), cache)


def _forecast(pack, patcher):
    settings = pack["accel.forecasting.methods"].ForecastSettings("taylorseer", interval=2)
    return pack["nodes.comfy.patcher"].apply_patch(patcher, settings.patch())


def _counts(text: str, pattern: str) -> list[tuple[int, int]]:
    return [tuple(map(int, m)) for m in re.findall(pattern, text)]


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("methods", [_cache_and_sparse, _forecast], ids=["blockcache+sparse", "forecast"])
def test_every_family_composed_with_the_methods(name, methods, node_registry, pack, caplog, monkeypatch):
    patcher = _patcher(name)
    mode = _mode(patcher)
    if mode is None:
        pytest.skip(f"{name}: DiT Multi-GPU refuses this family in every mode (tests/comfyui/test_multi_gpu.py)")
    if methods is _forecast:
        monkeypatch.setattr(test_family_sampling, "STEPS", FORECAST_STEPS)
    with caplog.at_level(logging.INFO, logger="dit_accel"):
        alone = _sample(methods(pack, patcher), name)
        split = _sample(_multi(node_registry, methods(pack, patcher), mode), name)
    assert torch.allclose(split, alone, rtol=1e-4, atol=1e-5), float((split - alone).abs().max())
    pattern = (r"computed (\d+)/(\d+) block evaluations" if methods is _cache_and_sparse
               else r"ran (\d+)/(\d+) model calls")
    counts = _counts(caplog.text, pattern)
    assert len(counts) == 2 and counts[0][0] < counts[0][1], (counts, "the method skipped nothing")
    # Rank 0 logs what it holds: every row (token split), or its cfg group's half of them (mode cfg).
    share = (1, 1) if mode == "auto" or methods is _forecast else (2, 2)
    assert counts[1] == (counts[0][0] // share[0], counts[0][1] // share[1]), counts
