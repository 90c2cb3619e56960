"""PISA's Taylor estimate of the skipped blocks: exact where the Taylor series is, better than dropping the blocks,
and the first order better than the zeroth."""
from __future__ import annotations

import pytest
import torch

from dit_accel.accel.sparse.blocks import keep_top_k
from dit_accel.accel.sparse.correction import (centroid_tail_correction, exact_correction, merge,
                                               taylor_correction)
from dit_accel.kernels.block_sparse import block_sparse_attention, layout_from_mask

BLOCK = 16


def _clustered(seed=0, b=1, h=2, blocks=8, d=32, spread=0.3):
    """Keys close to their block's mean (the regime the Taylor expansion is built for)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(b, h, blocks, 1, d, generator=gen)
    k = (centres + spread * torch.randn(b, h, blocks, BLOCK, d, generator=gen)).reshape(b, h, -1, d)
    q = torch.randn(b, h, blocks * BLOCK, d, generator=gen)
    v = torch.randn(b, h, blocks * BLOCK, d, generator=gen)
    return q, k, v


def _mask(q, k, keep=2):
    scores = torch.randn(q.shape[0], q.shape[1], q.shape[2] // BLOCK, k.shape[2] // BLOCK,
                         generator=torch.Generator().manual_seed(5))
    return keep_top_k(scores, keep)


def _error(q, k, v, mask, correction):
    out = block_sparse_attention(q, k, v, layout_from_mask(mask, BLOCK, BLOCK), correction, backend="torch")
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return float((out - full).norm() / full.norm())


def test_zeroth_order_is_exact_when_every_key_equals_its_block_mean():
    q, k, v = _clustered(spread=0.0)
    mask = _mask(q, k)
    assert _error(q, k, v, mask, taylor_correction(q, k, v, mask, BLOCK, 32 ** -0.5, order=0)) < 1e-5


def test_first_order_beats_zeroth_which_beats_dropping():
    q, k, v = _clustered(spread=0.3)
    mask = _mask(q, k)
    scale = 32 ** -0.5
    dropped = _error(q, k, v, mask, None)
    zeroth = _error(q, k, v, mask, taylor_correction(q, k, v, mask, BLOCK, scale, order=0))
    first_row = _error(q, k, v, mask, taylor_correction(q, k, v, mask, BLOCK, scale, order=1, mixing="row"))
    first_block = _error(q, k, v, mask, taylor_correction(q, k, v, mask, BLOCK, scale, order=1, mixing="block"))
    assert first_row < zeroth < dropped
    assert first_block < zeroth


def test_a_full_mask_needs_no_correction():
    q, k, v = _clustered()
    full = torch.ones(1, 2, 8, 8, dtype=torch.bool)
    c = taylor_correction(q, k, v, full, BLOCK, 32 ** -0.5)
    assert torch.equal(c.denominator, torch.zeros_like(c.denominator))
    assert torch.equal(c.numerator, torch.zeros_like(c.numerator))


def test_sol_attn_tail_beats_dropping():
    q, k, v = _clustered(spread=0.3)
    mask = _mask(q, k)
    assert _error(q, k, v, mask, centroid_tail_correction(q, k, v, mask, BLOCK, 32 ** -0.5)) < \
        _error(q, k, v, mask, None)


def test_exact_correction_of_all_keys_alone_is_attention():
    q, k, v = _clustered()
    none = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    c = exact_correction(q, k, v, 32 ** -0.5)
    assert _error(q, k, v, none, c) < 1e-5


def test_merged_corrections_add_up_to_the_exact_attention():
    # Split the keys in two halves; each half's exact share, merged, is the attention over all keys.
    q, k, v = _clustered()
    half = k.shape[2] // 2
    scale = 32 ** -0.5
    both = merge(exact_correction(q, k[:, :, :half], v[:, :, :half], scale),
                 exact_correction(q, k[:, :, half:], v[:, :, half:], scale))
    none = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    assert _error(q, k, v, none, both) < 1e-5


def _grouped(seed=0, groups=4, spread=0.05):
    """Each block of 16 keys is `groups` tight groups around different centres: far from the block's mean."""
    gen = torch.Generator().manual_seed(seed)
    size = BLOCK // groups
    centres = torch.randn(1, 2, 8 * groups, 1, 32, generator=gen)
    k = (centres + spread * torch.randn(1, 2, 8 * groups, size, 32, generator=gen)).reshape(1, 2, -1, 32)
    q = torch.randn(1, 2, 8 * BLOCK, 32, generator=gen)
    v = torch.randn(1, 2, 8 * BLOCK, 32, generator=gen)
    return q, k, v


def test_sub_blocks_matching_the_key_groups_beat_whole_blocks():
    q, k, v = _grouped()
    mask = _mask(q, k)
    scale = 32 ** -0.5
    whole = _error(q, k, v, mask, taylor_correction(q, k, v, mask, BLOCK, scale, order=1))
    sub = _error(q, k, v, mask, taylor_correction(q, k, v, mask, BLOCK, scale, order=1, sub_block=4))
    assert sub < 0.25 * whole


def test_sub_block_of_the_block_size_is_the_block_estimate():
    q, k, v = _clustered()
    mask = _mask(q, k)
    a = taylor_correction(q, k, v, mask, BLOCK, 0.2, order=1)
    b = taylor_correction(q, k, v, mask, BLOCK, 0.2, order=1, sub_block=BLOCK)
    torch.testing.assert_close(a.numerator, b.numerator)
    torch.testing.assert_close(a.denominator, b.denominator)


def test_sub_block_estimate_handles_a_ragged_tail():
    # 120 keys: the last block holds 8 tokens = 2 groups of 4; a skipped tail is estimated, not read past its end.
    q, k, v = (t[:, :, :120] for t in _grouped(spread=0.0))
    mask = keep_top_k(torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(5)), 3)
    mask[..., -1] = False
    c = taylor_correction(q, k, v, mask, BLOCK, 32 ** -0.5, order=0, sub_block=4)
    assert _error(q, k, v, mask, c) < 1e-5  # zero spread inside every group: the zeroth order is exact


def test_sub_block_must_divide_the_block():
    q, k, v = _clustered()
    with pytest.raises(ValueError, match="divide"):
        taylor_correction(q, k, v, _mask(q, k), BLOCK, 0.2, sub_block=5)


def test_estimate_cost_grows_with_smaller_groups_and_shrinks_with_length():
    from dit_accel.accel.sparse.correction import taylor_cost
    short = [taylor_cost(256, 256, 128, 128, 16, 1, "block", sub) for sub in (16, 8, 4)]
    assert short[0] < short[1] < short[2]
    assert taylor_cost(256, 256, 128, 128, 16, -1, "block") == 0.0
    assert taylor_cost(32768, 32768, 128, 128, 64, 1, "block", 16) < 0.2 * taylor_cost(256, 256, 128, 128, 16, 1,
                                                                                         "block", 4)
