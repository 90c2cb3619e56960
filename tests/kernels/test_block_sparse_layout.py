"""Block layouts (mask <-> index lists, density, compatibility checks) and the backend dispatch's errors and
fallback warning. Plain torch on CPU; no Triton needed."""
from __future__ import annotations

import logging

import pytest
import torch

from dit_accel.kernels.block_sparse import (BlockLayout, SoftmaxCorrection, block_sparse_attention, dense_layout,
                                            layout_from_mask, layout_to_mask, random_layout)
from dit_accel.kernels.logs import forget_warnings


def test_mask_round_trip_lists_visited_blocks_first_in_ascending_order():
    mask = torch.rand(2, 3, 4, 7, generator=torch.Generator().manual_seed(0)) < 0.4
    mask[0, 0, 0] = False
    mask[1, 2, 3] = True
    layout = layout_from_mask(mask, 16, 32)
    assert layout.kv_indices.dtype == layout.kv_counts.dtype == torch.int32
    assert torch.equal(layout.kv_counts, mask.sum(-1).int())
    assert layout.n_q_blocks == 4 and layout.n_k_blocks == 7
    assert torch.equal(layout_to_mask(layout), mask)
    for b, h, qb in [(0, 0, 0), (1, 2, 3), (1, 0, 2)]:
        n = int(layout.kv_counts[b, h, qb])
        listed = layout.kv_indices[b, h, qb, :n].tolist()
        assert listed == mask[b, h, qb].nonzero().flatten().tolist()
    assert layout.density() == pytest.approx(mask.float().mean().item())


def test_empty_mask_gives_zero_counts():
    layout = layout_from_mask(torch.zeros(1, 1, 2, 3, dtype=torch.bool), 16, 16)
    assert layout.kv_counts.sum() == 0 and layout.density() == 0.0
    assert not layout_to_mask(layout).any()


def test_dense_layout_visits_everything():
    layout = dense_layout(2, 3, 100, 77, 32, 16)
    assert (layout.n_q_blocks, layout.n_k_blocks) == (4, 5)
    assert layout.density() == 1.0 and layout_to_mask(layout).all()


def test_random_layout_has_the_same_density_in_every_query_block():
    layout = random_layout(2, 2, 256, 512, 64, 64, 0.25, seed=3)
    assert (layout.kv_counts == 2).all()  # 0.25 of 8 key blocks
    mask = layout_to_mask(layout)
    assert (mask.sum(-1) == 2).all() and layout.density() == 0.25
    assert not torch.equal(mask[0, 0], mask[1, 1])  # random, not one pattern repeated
    assert torch.equal(random_layout(2, 2, 256, 512, 64, 64, 0.25, seed=3).kv_indices, layout.kv_indices)


def test_layout_validation_names_the_problem():
    idx = torch.zeros(1, 1, 2, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="int32"):
        BlockLayout(idx, torch.zeros(1, 1, 2, dtype=torch.int32), 16, 16, 3)
    with pytest.raises(ValueError, match=r"\[B, H, n_q_blocks, max_kv\]"):
        BlockLayout(idx.int(), torch.zeros(1, 1, 3, dtype=torch.int32), 16, 16, 3)
    with pytest.raises(ValueError, match="bool"):
        layout_from_mask(torch.ones(1, 1, 2, 2), 16, 16)
    with pytest.raises(ValueError, match=r"\[B, H, Lq, Dv\]"):
        SoftmaxCorrection(torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 5), torch.zeros(1, 1, 4))


def _qkv(b=1, h=2, lq=40, lk=40, d=16):
    return torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, d)


def test_layout_for_other_lengths_is_refused():
    q, k, v = _qkv(lq=40, lk=40)
    with pytest.raises(ValueError, match="rebuild the layout"):
        block_sparse_attention(q, k, v, dense_layout(1, 2, 80, 40, 16, 16), backend="torch")
    with pytest.raises(ValueError, match="rebuild the layout"):
        block_sparse_attention(q, k, v, dense_layout(1, 2, 40, 20, 16, 16), backend="torch")
    with pytest.raises(ValueError, match="batch x heads"):
        block_sparse_attention(q, k, v, dense_layout(1, 3, 40, 40, 16, 16), backend="torch")


def test_mismatched_tensors_are_refused():
    q, k, v = _qkv()
    layout = dense_layout(1, 2, 40, 40, 16, 16)
    with pytest.raises(ValueError, match="do not match"):
        block_sparse_attention(q, k[..., :8], v, layout)
    with pytest.raises(ValueError, match="do not match"):
        block_sparse_attention(q, k, v[:, :, :30], layout)
    with pytest.raises(ValueError, match=r"\[batch, heads, tokens, head_dim\]"):
        block_sparse_attention(q[0], k, v, layout)
    bad = SoftmaxCorrection(torch.zeros(1, 2, 40, 8), torch.zeros(1, 2, 40), torch.zeros(1, 2, 40))
    with pytest.raises(ValueError, match="correction numerator"):
        block_sparse_attention(q, k, v, layout, bad)
    with pytest.raises(ValueError, match="backend"):
        block_sparse_attention(q, k, v, layout, backend="cuda")


def test_auto_falls_back_with_one_warning_per_reason(monkeypatch, caplog):
    forget_warnings("block-sparse-fallback:")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = _qkv()
    layout = dense_layout(1, 2, 40, 40, 16, 16)
    with caplog.at_level(logging.WARNING, logger="dit_accel"):
        first = block_sparse_attention(q, k, v, layout)
        block_sparse_attention(q, k, v, layout)
    warnings = [r for r in caplog.records if "falls back to the torch reference" in r.getMessage()]
    assert len(warnings) == 1 and "cpu" in warnings[0].getMessage()
    torch.testing.assert_close(first, block_sparse_attention(q, k, v, layout, backend="torch"))


def test_forcing_triton_where_it_cannot_run_raises_with_the_reason(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="backend='auto'"):
        block_sparse_attention(q.double(), k.double(), v.double(), dense_layout(1, 2, 40, 40, 16, 16),
                               backend="triton")
