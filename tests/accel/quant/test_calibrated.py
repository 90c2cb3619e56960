"""Calibrated weight quantization: calibration statistics, GPTQ on the twin-log
codebook, and the memory plan that splits Gram collection into passes."""
from __future__ import annotations

import pytest
import torch

from dit_accel.accel.quant import WeightOnlyConfig, collect_channel_stats, quantize_
from dit_accel.accel.quant.calibration import gram_bytes, gram_passes
from dit_accel.accel.quant.gptq import gptq_quantize
from dit_accel.accel.quant.linear import CodebookLinear
from dit_accel.accel.quant.rotation import ChannelStats
from dit_accel.accel.quant.twin_log import dequantize_weight, make_codebook, quantize_weight


def _correlated_inputs(n=2048, k=128, seed=0):
    """Activations near a low-rank subspace with uneven channel scales, as real layer inputs are."""
    gen = torch.Generator().manual_seed(seed)
    low_rank = torch.randn(n, k // 8, generator=gen) @ torch.randn(k // 8, k, generator=gen)
    return (low_rank + 0.3 * torch.randn(n, k, generator=gen)) * torch.linspace(0.2, 3.0, k)


def _output_error(x, weight, codes, scales, codebook):
    ref = x @ weight.T
    return float((x @ dequantize_weight(codes, scales, codebook).T - ref).square().mean() / ref.square().mean())


def test_channel_stats_accumulate_absmax_and_gram():
    model = torch.nn.Sequential()
    model.add_module("blocks", torch.nn.ModuleList([torch.nn.Sequential()]))
    model.blocks[0].add_module("ffn", torch.nn.Linear(8, 4))
    a, b = torch.randn(3, 5, 8), torch.randn(7, 8)
    with collect_channel_stats(model, gram=True) as stats:
        model.blocks[0].ffn(a)
        model.blocks[0].ffn(b)
    s = stats["blocks.0.ffn"]
    rows = torch.cat([a.reshape(-1, 8), b])
    assert s.tokens == 22
    torch.testing.assert_close(s.absmax, rows.abs().amax(0))
    torch.testing.assert_close(s.gram, rows.T @ rows / 22)
    with collect_channel_stats(model) as cheap:  # no Gram unless asked: K^2 floats per layer
        model.blocks[0].ffn(a)
    assert cheap["blocks.0.ffn"].gram is None


def test_gptq_with_white_inputs_is_plain_rounding():
    # H = I: no column can absorb another's error, so GPTQ must reduce to the data-free per-group search.
    weight = torch.randn(32, 128, generator=torch.Generator().manual_seed(1)) * 0.05
    codebook = make_codebook(weight, 4, 64, "twin_log")
    codes, scales = gptq_quantize(weight, torch.eye(128), codebook, 64)
    plain_codes, plain_scales, _ = quantize_weight(weight, 4, 64, "twin_log", True)
    assert torch.equal(codes, plain_codes) and torch.equal(scales, plain_scales)


@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_lowers_the_layer_output_error(bits):
    x = _correlated_inputs()
    weight = torch.randn(64, 128, generator=torch.Generator().manual_seed(2)) * 0.05
    codebook = make_codebook(weight, bits, 64, "twin_log")
    plain = _output_error(x, weight, *quantize_weight(weight, bits, 64, "twin_log", True)[:2], codebook)
    gptq = _output_error(x, weight, *gptq_quantize(weight, x.T @ x / len(x), codebook, 64), codebook)
    assert gptq < 0.5 * plain  # correlated inputs let later columns absorb most of each rounding error


def test_calibrated_config_needs_statistics_and_keeps_the_file_layout(tiny_wan):
    config = WeightOnlyConfig(bits=4, calibration="gptq")
    with pytest.raises(ValueError, match="calibration"):
        quantize_(tiny_wan, config)
    with pytest.raises(ValueError, match="clip_search"):
        WeightOnlyConfig(calibration="gptq", clip_search=False)
    with pytest.raises(ValueError, match="calibration must be"):
        WeightOnlyConfig(calibration="activation")
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 16, 1, 8, 8, generator=gen), torch.rand(2, generator=gen)
    ctx = torch.randn(2, 3, tiny_wan.cfg.text_dim, generator=gen) * 0.1
    with collect_channel_stats(tiny_wan, gram=True) as stats, torch.no_grad():
        tiny_wan(x, t, ctx, {})
    quantize_(tiny_wan, config, calibration=stats)
    layers = [m for m in tiny_wan.modules() if isinstance(m, CodebookLinear)]
    assert layers and all(m.bits == 4 and m.group_size == 64 for m in layers)


def test_gram_passes_fit_the_budget_in_order():
    layers = [("a", 64), ("b", 64), ("c", 128), ("d", 256), ("e", 64)]
    budget = gram_bytes(64) * 2 + gram_bytes(128)
    passes = gram_passes(layers, budget)
    assert [n for p in passes for n in p] == [n for n, _ in layers]
    widths = dict(layers)
    for p in passes:  # a pass over budget only when it is a single oversized layer
        assert sum(gram_bytes(widths[n]) for n in p) <= budget or len(p) == 1
    assert passes[0] == ["a", "b", "c"] and ["d"] in passes
    assert gram_passes(layers, 1 << 40) == [[n for n, _ in layers]]
    with pytest.raises(ValueError):
        gram_passes(layers, 0)


# --- memory bounds at real-scale widths: Hessian blocks, row chunks, one calibration pass at a time ------------------

def test_hessian_blocks_fit_the_budget_and_split_only_what_must():
    from dit_accel.accel.quant.gptq import HESSIAN_SPLIT, hessian_block, hessian_bytes
    budget = 1 << 30
    for k in (1024, 3072, 5120, 12288, 13824, 15360):        # the reference model's, Wan 14B's and Flux's widths
        block = hessian_block(k, budget)
        assert k % block == 0 and hessian_bytes(k, block) <= budget
        if block < k:                                         # split: the full matrix would not fit, and no wider
            assert hessian_bytes(k, k) > budget and block % HESSIAN_SPLIT == 0      # block of K's would
            assert all(hessian_bytes(k, b) > budget for b in range(block + HESSIAN_SPLIT, k, HESSIAN_SPLIT)
                       if k % b == 0)
    assert hessian_block(5120, budget) == 5120 and hessian_block(15360, budget) < 15360


def test_channel_stats_keep_the_diagonal_gram_blocks_when_split():
    x = torch.randn(50, 512)
    full, split = ChannelStats(torch.zeros(512), keep_gram=True), ChannelStats(torch.zeros(512), keep_gram=True,
                                                                                gram_block=256)
    for part in (x[:20], x[20:]):
        full.update(part)
        split.update(part)
    assert split.gram.shape == (2, 256, 256)
    for b in range(2):
        torch.testing.assert_close(split.gram[b], full.gram[b * 256:(b + 1) * 256, b * 256:(b + 1) * 256])


def test_gptq_on_hessian_blocks_compensates_within_each_block():
    """A block-diagonal Gram matrix is GPTQ on each block alone; on correlated inputs it still beats data-free."""
    x = _correlated_inputs(k=256)
    weight = torch.randn(48, 256, generator=torch.Generator().manual_seed(3)) * 0.05
    codebook = make_codebook(weight, 4, 64, "uniform")
    gram = x.T @ x / len(x)
    blocks = torch.stack([gram[:128, :128], gram[128:, 128:]])
    codes, scales = gptq_quantize(weight, blocks, codebook, 64)
    for b in range(2):
        alone_codes, alone_scales = gptq_quantize(weight[:, b * 128:(b + 1) * 128], blocks[b], codebook, 64)
        assert torch.equal(codes[:, b * 128:(b + 1) * 128], alone_codes)
        assert torch.equal(scales[:, b * 2:(b + 1) * 2], alone_scales)
    plain = _output_error(x, weight, *quantize_weight(weight, 4, 64, "uniform", True)[:2], codebook)
    assert _output_error(x, weight, codes, scales, codebook) < 0.7 * plain
    with pytest.raises(ValueError, match="tile"):
        gptq_quantize(weight, blocks[:, :96, :96], codebook, 64)


def test_row_chunks_give_the_unchunked_codes():
    from dit_accel.accel.quant.gptq import CodebookGrid, gptq_round
    x = _correlated_inputs(k=128)
    weight = torch.randn(40, 128, generator=torch.Generator().manual_seed(4)) * 0.05
    codebook = make_codebook(weight, 3, 64, "twin_log")
    grids = [CodebookGrid(codebook, 64, 40, 128, weight.device) for _ in range(2)]
    gptq_round(weight, x.T @ x / len(x), grids[0], 64)
    gptq_round(weight, x.T @ x / len(x), grids[1], 64, rows=16)
    assert torch.equal(grids[0].codes, grids[1].codes) and torch.equal(grids[0].scales, grids[1].scales)
    codes, scales, _ = quantize_weight(weight, 3, 64, "twin_log", True)
    chunked, chunked_scales, _ = quantize_weight(weight, 3, 64, "twin_log", True, rows=16)
    assert torch.equal(codes, chunked) and torch.equal(scales, chunked_scales)


def test_pass_calibration_holds_one_pass_and_matches_collecting_all(tiny_wan):
    from dit_accel.accel.quant.calibration import PassCalibration, calibrate
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 16, 1, 8, 8, generator=gen), torch.rand(2, generator=gen)
    ctx = torch.randn(2, 3, tiny_wan.cfg.text_dim, generator=gen) * 0.1

    def run():
        with torch.no_grad():
            tiny_wan(x, t, ctx, {})
    every = calibrate(tiny_wan, run)
    budget = 3 * gram_bytes(tiny_wan.cfg.dim)
    lazy = PassCalibration(tiny_wan, run, budget_bytes=budget)
    assert len(lazy.passes) > 2
    held = []
    for names in lazy.passes:
        for name in names:
            torch.testing.assert_close(lazy.get(name).gram, every[name].gram)
            held.append(sum(s.gram_sum.numel() * 4 for s in lazy._stats.values()))
    assert lazy.runs == len(lazy.passes)                        # in model order: each pass ran once
    assert max(held) <= budget                                   # never more than one pass's Gram matrices
    assert lazy.get("not.a.layer") is None
