"""Block-sparse attention numerics: the torch reference against SDPA, the Triton kernel against the reference, and the
correction merge (an exact correction of the skipped blocks must give back dense attention).

The Triton cases run on CUDA when there is one, else under the Triton interpreter on CPU (tiny shapes): the
interpreter only works when TRITON_INTERPRET=1 is set before triton is imported, so this module imports triton that
way at collection time (and restores the variable, so no other test sees it) or skips saying why.
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from dit_accel.kernels.block_sparse import (BlockLayout, SoftmaxCorrection, block_sparse_attention, dense_layout,
                                            layout_from_mask, layout_to_mask, random_layout)
from dit_accel.kernels.block_sparse import reference as reference_module
from dit_accel.kernels.block_sparse.triton_kernel import block_sparse_attention_triton

ON_CUDA = torch.cuda.is_available()


def _prepare_triton() -> str | None:
    """None if the kernel can run in this process, else why not."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    if ON_CUDA:
        return None
    if "triton" not in sys.modules:
        before = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1"
        try:
            import triton.language  # noqa: F401  (its helpers are jitted now, in interpreter mode)
        finally:
            if before is None:
                del os.environ["TRITON_INTERPRET"]
            else:
                os.environ["TRITON_INTERPRET"] = before
    from triton.runtime.interpreter import InterpretedFunction
    if not isinstance(sys.modules["triton.language"].zeros, InterpretedFunction):
        return "triton was imported without TRITON_INTERPRET=1 before this module; run tests/kernels on its own"
    return None


TRITON_SKIP = _prepare_triton()
needs_triton = pytest.mark.skipif(TRITON_SKIP is not None, reason=f"Triton kernel cannot run: {TRITON_SKIP}")
DEVICE = "cuda" if ON_CUDA else "cpu"
# fp32 on both paths: the kernel uses IEEE fp32 dots for fp32 inputs, so only summation order differs.
ATOL, RTOL = 2e-5, 1e-4
# fp16 inputs: p is rounded to fp16 before the p @ v dot (as in FlashAttention), the reference keeps fp32.
ATOL_HALF = 2e-3


@pytest.fixture
def interpret(monkeypatch):
    """The kernel on CPU tensors needs TRITON_INTERPRET=1 while it runs (kernels are built per mode)."""
    if not ON_CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def qkv(b, h, lq, lk, d, dv=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=g)
    k = torch.randn(b, h, lk, d, generator=g)
    v = torch.randn(b, h, lk, dv or d, generator=g)
    return [t.to(DEVICE, dtype) for t in (q, k, v)]


def sparse_mask(b, h, lq, lk, bq, bk, seed=0) -> torch.Tensor:
    """Random block mask (about half visited) in which query block 1 of (0, 0) visits nothing."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, h, math.ceil(lq / bq), math.ceil(lk / bk), generator=g) < 0.5
    mask[0, 0, 1] = False
    return mask.to(DEVICE)


def exact_correction(q, k, v, layout: BlockLayout, scale: float) -> SoftmaxCorrection:
    """The skipped keys' exact share of the softmax, with shift = their row max (-inf where nothing is skipped)."""
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    visited = layout_to_mask(layout).expand(q.shape[0], q.shape[1], -1, -1)
    visited = visited.repeat_interleave(layout.block_q, 2)[:, :, :q.shape[2]]
    visited = visited.repeat_interleave(layout.block_k, 3)[..., :k.shape[2]]
    s = s.masked_fill(visited, float("-inf"))
    shift = s.amax(-1)
    p = torch.exp(s - torch.where(torch.isinf(shift), 0.0, shift)[..., None])
    return SoftmaxCorrection((p @ v.double()).float(), p.sum(-1).float(), shift.float())


def random_correction(q, v, seed=1) -> SoftmaxCorrection:
    g = torch.Generator().manual_seed(seed)
    b, h, lq, dv = *q.shape[:3], v.shape[3]
    num = torch.randn(b, h, lq, dv, generator=g)
    den = torch.rand(b, h, lq, generator=g) * 3
    shift = torch.randn(b, h, lq, generator=g) * 2
    return SoftmaxCorrection(*(t.to(DEVICE) for t in (num, den, shift)))


# (label, batch, heads, q_len, k_len, head_dim, value head_dim, block_q, block_k, key tile or None)
ODD_SHAPES = [
    ("lq>lk, tails in q and k, d64", 1, 2, 100, 77, 64, 64, 32, 32, None),
    ("lq<lk, k block split in 2 tiles, d128", 1, 1, 37, 130, 128, 128, 16, 32, 16),
    ("batch 2, exact tiles, d16", 2, 1, 64, 64, 16, 16, 16, 16, None),
    ("value head_dim != head_dim", 1, 1, 48, 50, 32, 64, 16, 16, None),
]


def _run(backend, q, k, v, layout, correction=None, scale=None, block_n=None):
    if backend == "triton":
        return block_sparse_attention_triton(q, k, v, layout, correction, scale, block_n=block_n)
    return block_sparse_attention(q, k, v, layout, correction, scale, backend="torch")


BACKENDS = ["torch", pytest.param("triton", marks=needs_triton)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lq,lk,d,block", [(100, 77, 64, 32), (64, 64, 16, 16), (30, 45, 128, 16)])
def test_full_mask_equals_sdpa(backend, lq, lk, d, block, interpret):
    q, k, v = qkv(1, 2, lq, lk, d)
    out = _run(backend, q, k, v, dense_layout(1, 2, lq, lk, block, block, DEVICE))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_correction_of_skipped_blocks_gives_dense_attention(backend, interpret):
    """Proves the merge rule: visited blocks + the skipped blocks' exact (numerator, denominator, shift) = dense."""
    q, k, v = qkv(2, 2, 70, 90, 32)
    layout = layout_from_mask(sparse_mask(2, 2, 70, 90, 16, 16), 16, 16)  # includes a query block visiting nothing
    mask = layout_to_mask(layout)
    mask[1, 1] = True  # and a head that skips nothing (shift -inf, numerator 0)
    layout = layout_from_mask(mask, 16, 16)
    scale = 0.3
    out = _run(backend, q, k, v, layout, exact_correction(q, k, v, layout, scale), scale)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=scale), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_query_block_visiting_nothing_without_correction_is_zero(backend, interpret):
    q, k, v = qkv(1, 1, 40, 40, 16)
    mask = torch.ones(1, 1, 3, 3, dtype=torch.bool, device=DEVICE)
    mask[0, 0, 1] = False
    out = _run(backend, q, k, v, layout_from_mask(mask, 16, 16))
    assert torch.equal(out[0, 0, 16:32], torch.zeros_like(out[0, 0, 16:32]))
    assert out[0, 0, :16].abs().sum() > 0 and torch.isfinite(out).all()


def test_reference_sparse_matches_masked_sdpa():
    """Without a correction the reference is SDPA with the block mask expanded to tokens (rows with keys)."""
    q, k, v = qkv(1, 2, 50, 70, 32)
    mask = torch.rand(1, 2, 4, 5, generator=torch.Generator().manual_seed(3)) < 0.6
    mask[..., 0] = True  # every query block sees a key, so SDPA has no empty rows
    layout = layout_from_mask(mask.to(DEVICE), 16, 16)
    tokens = mask.repeat_interleave(16, 2)[:, :, :50].repeat_interleave(16, 3)[..., :70].to(DEVICE)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=tokens)
    torch.testing.assert_close(block_sparse_attention(q, k, v, layout, backend="torch"), expected,
                               atol=ATOL, rtol=RTOL)


def test_reference_chunking_does_not_change_the_result(monkeypatch):
    q, k, v = qkv(2, 3, 40, 40, 16)
    layout = layout_from_mask(sparse_mask(2, 3, 40, 40, 16, 16), 16, 16)
    whole = block_sparse_attention(q, k, v, layout, random_correction(q, v), backend="torch")
    monkeypatch.setattr(reference_module, "_SCORE_BUDGET", 16 * 40)  # one (batch, head) row per chunk
    chunked = block_sparse_attention(q, k, v, layout, random_correction(q, v), backend="torch")
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)


def test_shared_layout_equals_per_batch_copy():
    q, k, v = qkv(2, 2, 40, 40, 16)
    shared = random_layout(1, 2, 40, 40, 16, 16, 0.5, device=DEVICE)
    copied = BlockLayout(shared.kv_indices.expand(2, -1, -1, -1).contiguous(),
                         shared.kv_counts.expand(2, -1, -1).contiguous(), 16, 16, shared.n_k_blocks)
    torch.testing.assert_close(block_sparse_attention(q, k, v, shared, backend="torch"),
                               block_sparse_attention(q, k, v, copied, backend="torch"))


@needs_triton
@pytest.mark.parametrize("with_correction", [False, True], ids=["plain", "correction"])
@pytest.mark.parametrize("label,b,h,lq,lk,d,dv,bq,bk,block_n", ODD_SHAPES, ids=[s[0] for s in ODD_SHAPES])
def test_kernel_equals_reference_on_odd_shapes(label, b, h, lq, lk, d, dv, bq, bk, block_n, with_correction,
                                               interpret):
    q, k, v = qkv(b, h, lq, lk, d, dv)
    layout = layout_from_mask(sparse_mask(b, h, lq, lk, bq, bk), bq, bk)
    corr = random_correction(q, v) if with_correction else None
    expected = block_sparse_attention(q, k, v, layout, corr, backend="torch")
    got = block_sparse_attention_triton(q, k, v, layout, corr, block_n=block_n)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


@needs_triton
def test_kernel_shared_layout_and_strided_inputs(interpret):
    """A layout shared over the batch (stride 0) and q / k / v as [B, L, H, D] views, as ComfyUI hands them over."""
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in qkv(2, 2, 40, 56, 32))
    layout = random_layout(1, 2, 40, 56, 16, 16, 0.5, device=DEVICE)
    torch.testing.assert_close(block_sparse_attention_triton(q, k, v, layout),
                               block_sparse_attention(q, k, v, layout, backend="torch"), atol=ATOL, rtol=RTOL)


@needs_triton
def test_kernel_half_precision(interpret):
    # bf16 on GPU only: the Triton 3.8 interpreter multiplies bf16 tl.dot operands as raw bits (checked on a bare
    # 16x16 dot), so a CPU result would say nothing about the kernel.
    dtypes = [torch.float16] + ([torch.bfloat16] if ON_CUDA else [])
    for dtype in dtypes:
        q, k, v = qkv(1, 2, 40, 50, 64, dtype=dtype)
        layout = layout_from_mask(sparse_mask(1, 2, 40, 50, 16, 16), 16, 16)
        got = block_sparse_attention_triton(q, k, v, layout, random_correction(q, v))
        expected = block_sparse_attention(q, k, v, layout, random_correction(q, v), backend="torch")
        assert got.dtype == dtype
        atol = ATOL_HALF if dtype == torch.float16 else 1e-2  # bf16 keeps 8 mantissa bits
        torch.testing.assert_close(got.float(), expected.float(), atol=atol, rtol=1e-2)


@needs_triton
def test_auto_backend_routes_to_the_kernel_where_it_can(interpret):
    from dit_accel.kernels.block_sparse import resolve_backend
    q, k, v = qkv(1, 1, 32, 32, 16)
    layout = dense_layout(1, 1, 32, 32, 16, 16, DEVICE)
    assert resolve_backend(q, k, v, layout, "triton") == ("triton", None)
    route, reason = resolve_backend(q, k, v, layout, "auto")
    assert route == ("triton" if ON_CUDA else "torch") and (reason is None) == ON_CUDA
    route, reason = resolve_backend(q.double(), k.double(), v.double(), layout, "triton")
    assert route == "torch" and "dtype" in reason
    odd = dense_layout(1, 1, 32, 32, 16, 24, DEVICE)
    assert "block_k 24" in resolve_backend(q, k, v, odd, "triton")[1]


@needs_triton
@pytest.mark.parametrize("d", [16, 64, 128, 256])
@pytest.mark.parametrize("block_q,block_k", [(16, 16), (64, 32), (128, 64), (128, 128), (256, 256)])
def test_autotune_candidates_tile_the_key_block(d, block_q, block_k):
    from dit_accel.kernels.block_sparse import triton_kernel as tk
    tk._import_triton()
    args = dict(BLOCK_M=block_q, BLOCK_K=block_k, HEAD_DIM=d, HEAD_DIM_V=d)
    kept = tk._prune_configs(tk._autotune_configs(), {}, **args)
    assert kept and all(block_k % c.kwargs["BLOCK_N"] == 0 for c in kept)


def test_reference_work_follows_the_layout_density():
    """The fallback gathers only listed blocks, so a FLOP counter (the bench's compute measure) sees the sparsity."""
    from torch.utils.flop_counter import FlopCounterMode
    q, k, v = qkv(1, 2, 128, 128, 32)

    def flops(layout):
        with FlopCounterMode(display=False) as counter:
            block_sparse_attention(q, k, v, layout, backend="torch")
        return counter.get_total_flops()
    dense = flops(dense_layout(1, 2, 128, 128, 16, 16, DEVICE))
    quarter = flops(random_layout(1, 2, 128, 128, 16, 16, 0.25, device=DEVICE))
    assert dense == 2 * 2 * 128 * 128 * (32 + 32) and quarter == dense // 4
