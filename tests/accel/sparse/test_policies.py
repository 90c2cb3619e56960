"""Mask policies: each returns a valid block selection within its budget, and the dense / full settings are exact."""
from __future__ import annotations

import pytest
import torch

from dit_accel.accel.sparse import Budget, Grid, make_policy
from dit_accel.accel.sparse.blocks import gather_tokens, invert, keep_top_p, tile_order
from dit_accel.accel.sparse.policies import POLICIES, PolicyInput
from dit_accel.kernels.block_sparse import block_sparse_attention

BLOCK = 16


def _inputs(seed=0, b=2, h=2, side=8, d=32, frames=1, budget=Budget(0.5)):
    gen = torch.Generator().manual_seed(seed)
    length = frames * side * side
    q, k, v = (torch.randn(b, h, length, d, generator=gen) for _ in range(3))
    return PolicyInput(q, k, v, Grid(frames, side, side), BLOCK, budget, d ** -0.5)


def _attend(inp: PolicyInput, sel) -> torch.Tensor:
    q, k, v = inp.q, inp.k, inp.v
    if sel.q_order is not None:
        q = gather_tokens(q, sel.q_order)
    if sel.k_order is not None:
        k, v = gather_tokens(k, sel.k_order), gather_tokens(v, sel.k_order)
    out = block_sparse_attention(q, k, v, sel.layout(inp.block), sel.correction, inp.scale, backend="torch")
    return out if sel.q_order is None else gather_tokens(out, invert(sel.q_order))


def _sdpa(inp):
    return torch.nn.functional.scaled_dot_product_attention(inp.q, inp.k, inp.v)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_gives_a_valid_selection_and_a_finite_output(name):
    inp = _inputs()
    sel = make_policy(name).select(inp)
    n = inp.q.shape[2] // BLOCK
    assert sel.mask.dtype == torch.bool and sel.mask.shape[-2:] == (n, n)
    assert sel.mask.any(-1).all(), "every query block must visit at least one key block"
    for order in (sel.q_order, sel.k_order):
        if order is not None:  # a permutation of the tokens
            assert torch.equal(order.sort(-1).values, torch.arange(inp.q.shape[2]).expand_as(order))
    out = _attend(inp, sel)
    assert out.shape == inp.q.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["pisa", "draft", "cluster", "grat", "window"])
def test_a_budget_of_zero_sparsity_keeps_every_block_and_equals_sdpa(name):
    inp = _inputs(budget=Budget(0.0))
    sel = make_policy(name).select(inp)
    assert sel.mask.all()
    torch.testing.assert_close(_attend(inp, sel), _sdpa(inp), atol=1e-5, rtol=1e-5)


def test_dense_policy_equals_sdpa_on_a_ragged_length():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 70, 32, generator=gen) for _ in range(3))
    inp = PolicyInput(q, k, v, Grid.infer(70), BLOCK, Budget(0.0), 32 ** -0.5)
    torch.testing.assert_close(_attend(inp, make_policy("dense").select(inp)), _sdpa(inp), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["pisa", "draft"])
@pytest.mark.parametrize("sparsity", [0.5, 0.75])
def test_top_k_policies_keep_exactly_their_budget(name, sparsity):
    inp = _inputs(budget=Budget(sparsity))
    sel = make_policy(name).select(inp)
    n = sel.mask.shape[-1]
    assert (sel.mask.sum(-1) == Budget(sparsity).keep_count(n)).all()


@pytest.mark.parametrize("name", ["grat", "window"])
def test_static_patterns_get_sparser_with_the_target(name):
    dens = [float(make_policy(name).select(_inputs(side=16, budget=Budget(s))).density) for s in (0.2, 0.6, 0.9)]
    assert dens[0] >= dens[1] >= dens[2] and dens[0] > dens[2]
    assert dens[1] >= 1 - 0.6 - 1e-6, "a static pattern never overshoots the sparsity target"


def test_top_p_keeps_the_fewest_blocks_reaching_the_mass():
    mass = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    assert keep_top_p(mass, 0.5).tolist() == [[True, False, False, False]]
    assert keep_top_p(mass, 0.8).tolist() == [[True, False, True, False]]
    assert keep_top_p(mass, 0.81).tolist() == [[True, False, True, True]]
    assert keep_top_p(mass, 0.1, force=torch.tensor([[False, True, False, False]])).tolist() == \
        [[True, True, False, False]]


def test_top_p_budget_is_dynamic_for_pisa():
    # Peaked attention (keys equal to their queries, large scale) needs fewer blocks than flat attention.
    flat = _inputs(budget=Budget(0.5, top_p=0.9))
    peaked = PolicyInput(flat.q * 4, flat.q * 4, flat.v, flat.grid, BLOCK, flat.budget, flat.scale)
    policy = make_policy("pisa")
    assert float(policy.select(peaked).density) < float(policy.select(flat).density)


def test_tile_order_makes_each_block_a_compact_patch():
    order = tile_order(Grid(1, 8, 8), (4, 4))
    first_block = order[:16]
    rows, cols = first_block // 8, first_block % 8
    assert rows.max() == 3 and cols.max() == 3


def test_grid_uses_the_model_hint_and_falls_back_to_the_squarest_frame():
    assert Grid.infer(2 * 4 * 6, (2, 4, 6)) == Grid(2, 4, 6)
    assert Grid.infer(48, (3, 3, 3)) == Grid(1, 6, 8)
    assert Grid.infer(256) == Grid(1, 16, 16)


def test_unknown_policy_or_setting_names_the_valid_ones():
    with pytest.raises(ValueError, match="available"):
        make_policy("nope")
    with pytest.raises(ValueError, match="spread_weight"):
        make_policy("pisa", nope=1)


def test_sol_attn_threshold_controls_sparsity_and_always_keeps_the_diagonal():
    inp = _inputs(side=16)
    low, high = (make_policy("sol-attn", tau=t).select(inp) for t in (0.0, 2.0))
    assert float(high.density) < float(low.density)
    n = high.mask.shape[-1]
    assert high.mask[..., torch.arange(n), torch.arange(n)].all()
