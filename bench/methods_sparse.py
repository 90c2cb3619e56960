"""Bench methods of sparse attention: one per mask policy, on the reference model (256 image tokens, 2 heads).

The reference model's sequence is short, so blocks are 16 tokens (16 x 16 = 256 block pairs per head): with the
default 64 there would be only 4 x 4 blocks and no meaningful sparsity. `<name>-s<percent>` variants sweep the target
sparsity for the policy x sparsity table. Every method reports `attention_sparsity` (dense warm-up calls included).
"""
from __future__ import annotations

from typing import Callable

from ..accel.patch import DiTPatch
from ..accel.sparse import SparseAttentionConfig, SparseAttentionPatch
from ..accel.sparse.policies.sol import SolParams
from .methods import BenchMethod, register_method

BLOCK = 16
WARMUP = 2
SWEEP = (0.5, 0.75, 0.9)
# sol-attn has no sparsity knob, only its threshold tau: these were read off the reference model's captured attention
# to land near the sweep's per-call sparsities (52 / 77 / 79 %: its always-exact diagonal +-1 blocks cap it near 81 %
# with 16 blocks). The measured attention_sparsity is in every result.
SOL_TAU = {0.5: 0.0, 0.75: 1.6, 0.9: 2.0}


def _patches(config: SparseAttentionConfig) -> Callable[[int], list[DiTPatch]]:
    return lambda steps: [SparseAttentionPatch(config)]


def _config(policy: str, sparsity: float, **kw) -> SparseAttentionConfig:
    if policy == "sol-attn":
        kw.setdefault("params", SolParams(tau=SOL_TAU[sparsity]))
    return SparseAttentionConfig(policy=policy, sparsity=sparsity, block_size=BLOCK, warmup_steps=WARMUP, **kw)


_DESCRIPTIONS = {
    "pisa": "PISA: exact critical blocks + first-order Taylor estimate of the rest",
    "sol-attn": "ComfyUI core's sol-attn rebuilt (adaptive per-head threshold, pooled tail): the baseline",
    "draft": "DraftAttention: pooled draft map, top-k blocks, patch-wise token reordering",
    "cluster": "Sparse VideoGen2: k-means semantic permutation, cluster-level budget",
    "grat": "GRAT: tile groups share a criss-cross key region (static)",
    "window": "spatial-temporal local window over tiles (static)",
}

for _policy, _text in _DESCRIPTIONS.items():
    register_method(BenchMethod(_policy, f"sparse attention, {_text}; 50% target, block {BLOCK}",
                                _patches(_config(_policy, 0.5))))
    for _s in SWEEP[1:]:
        register_method(BenchMethod(f"{_policy}-s{round(_s * 100)}", f"sparse attention, {_policy}, "
                                    f"{_s:.0%} target, block {BLOCK}", _patches(_config(_policy, _s))))
for _p in (0.8, 0.9):  # PISA with the dynamic (top-p) budget: diffuse layers keep more blocks
    register_method(BenchMethod(f"pisa-p{round(_p * 100)}", f"sparse attention, pisa, top-p {_p:g}, block {BLOCK}",
                                _patches(_config("pisa", 0.5, top_p=_p))))
register_method(BenchMethod("sparse-dense", "sparse attention patch with the full mask (must equal the model)",
                            _patches(SparseAttentionConfig(policy="dense", sparsity=0.0, block_size=BLOCK,
                                                           warmup_steps=0))))
