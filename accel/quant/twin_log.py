"""Codebook weight quantization: LRQ-DiT's Twin-Log Quantization (TLQ) and the uniform round-to-nearest baseline.

Paper: "LRQ-DiT: Log-Rotation Post-Training Quantization of Diffusion Transformers" (arXiv 2508.03485). DiT weights
are Gaussian-like with long tails, so an even grid spends levels on the sparse tails; a single log grid spends them
on values next to zero. TLQ uses two logarithmic grids ("twin logs"): a fine one that descends from a knee `c`
towards zero, and a coarser one that climbs from `c` to the group maximum, so most levels sit in the dense middle.

Our parametrisation (the paper gives the idea, not these formulas): the k = 2**(bits-1) magnitudes are
m_j = F(t_j) at the midrise points t_j = (2j+1)/(2k-1), with the companding curve F made of two log grids (levels in
geometric progression, each densest at its low end) that meet at the knee (c, c):
    F(t) = c * (b1**(t/c) - 1) / (b1 - 1)                       for t <= c
    F(t) = c + (1-c) * (b2**((t-c)/(1-c)) - 1) / (b2 - 1)       for t >  c
b1 > 1 packs levels towards zero, b2 > 1 packs them just above the knee and thins the tail; b1 = b2 = 1 is the
even grid, so a fitted TLQ codebook is never worse than uniform on the data it is fitted to. The signed codebook is
{-m} + {+m} (2**bits entries). (c, b1, b2) are fitted per layer by grid search on the layer's group-normalised
weights; scales are per group of `group_size` input channels, with an optional per-group clipping search.
Everything is fp32 and deterministic.
"""
from __future__ import annotations

import itertools

import torch

_CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)
ROW_CHUNK_WEIGHTS = 1 << 21  # weights searched together (a search's float temporaries grow with them, ~50 B each)


def row_chunk(in_features: int) -> int:
    """Rows quantized together: 8192 at the reference model's K = 256, 409 at Wan 14B's 5120, 136 at Flux's 15360."""
    return max(1, ROW_CHUNK_WEIGHTS // in_features)

_FIT_SAMPLE = 1 << 14


def uniform_codebook(bits: int) -> torch.Tensor:
    """Evenly spaced midrise grid on [-1, 1] with 2**bits levels (every code used, no wasted level)."""
    n = 2 ** bits
    half = (n - 1) / 2
    return (torch.arange(n, dtype=torch.float32) - half) / half


def _log_segment(t: torch.Tensor, base: float) -> torch.Tensor:
    """A log grid on [0, 1]: (base**t - 1) / (base - 1), the straight line when base == 1."""
    return t if base == 1.0 else (base ** t - 1.0) / (base - 1.0)


def twin_log_magnitudes(k: int, knee: float, base_low: float, base_high: float) -> torch.Tensor:
    t = (2 * torch.arange(k, dtype=torch.float64) + 1) / (2 * k - 1)
    low = knee * _log_segment(t / knee, base_low)
    high = knee + (1 - knee) * _log_segment((t - knee) / (1 - knee), base_high)
    return torch.where(t <= knee, low, high).float()


def signed_codebook(magnitudes: torch.Tensor) -> torch.Tensor:
    m = magnitudes.sort().values
    return torch.cat([-m.flip(0), m])


def nearest_codes(values: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest entry of a sorted codebook, for every value."""
    mids = (codebook[1:] + codebook[:-1]) / 2
    return torch.bucketize(values.contiguous(), mids.to(values.dtype))


def _mse(values: torch.Tensor, codebook: torch.Tensor) -> float:
    return float((codebook[nearest_codes(values, codebook)] - values).square().mean())


def _candidates():
    knees = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    bases = (1.0, 1.5, 2.0, 4.0, 8.0)
    return itertools.product(knees, bases, bases)


def fit_twin_log(normalised: torch.Tensor, bits: int) -> torch.Tensor:
    """The twin-log codebook with the least squared error on `normalised` weights (values in [-1, 1])."""
    flat = normalised.reshape(-1).float()
    if flat.numel() > _FIT_SAMPLE:  # a fixed stride, not random: the fit is deterministic
        flat = flat[:: flat.numel() // _FIT_SAMPLE]
    k = 2 ** (bits - 1)
    best, best_err = None, float("inf")
    for knee, base_low, base_high in _candidates():
        cb = signed_codebook(twin_log_magnitudes(k, knee, base_low, base_high))
        err = _mse(flat, cb)
        if err < best_err:
            best, best_err = cb, err
    return best


def group_view(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    n, k = weight.shape
    if k % group_size:
        raise ValueError(f"in_features {k} is not a multiple of group_size {group_size}")
    return weight.float().reshape(n, k // group_size, group_size)


def quantize_groups(weight: torch.Tensor, codebook: torch.Tensor, group_size: int, clip_search: bool,
                    channel_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (N, K) and fp16 scales (N, K/group) for `weight` on a codebook whose largest magnitude is 1.

    `channel_weight` (K,), when given, weighs each input column's squared error (activation-aware: E[x_k^2] from
    calibration), so the scale search and refinement minimise the layer's output error rather than the weight's.
    """
    wg = group_view(weight, group_size)
    cw = _channel_weight_view(channel_weight, wg)
    absmax = wg.abs().amax(-1).clamp(min=1e-8)
    ratios = _CLIP_RATIOS if clip_search else (1.0,)
    best_err = best_codes = best_scale = None
    for r in ratios:
        # Scales are stored in fp16: quantize against the rounded scale so dequantization reproduces the fit.
        scale = (absmax * r).half().float().clamp(min=6e-8)
        codes = nearest_codes(wg / scale.unsqueeze(-1), codebook)
        err = _group_error(codebook[codes] * scale.unsqueeze(-1) - wg, cw)
        if best_err is None:
            best_err, best_codes, best_scale = err, codes, scale
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_codes = torch.where(better.unsqueeze(-1), codes, best_codes)
            best_scale = torch.where(better, scale, best_scale)
    if clip_search:
        best_codes, best_scale = _refine_scales(wg, codebook, best_codes, best_scale, best_err, cw)
    return best_codes.reshape(weight.shape), best_scale.half()


def _channel_weight_view(channel_weight: torch.Tensor | None, wg: torch.Tensor) -> torch.Tensor:
    """(1, G, group) column weights normalised to mean 1 (all ones when data-free)."""
    if channel_weight is None:
        return torch.ones(1, *wg.shape[1:], dtype=wg.dtype, device=wg.device)
    cw = channel_weight.to(wg.device, wg.dtype).clamp(min=0)
    cw = cw / cw.mean().clamp(min=1e-30)
    return cw.clamp(min=1e-4).view(1, *wg.shape[1:])  # dead channels still get a say, however small


def _group_error(diff: torch.Tensor, cw: torch.Tensor) -> torch.Tensor:
    return (diff.square() * cw).sum(-1)


def _refine_scales(wg: torch.Tensor, codebook: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor,
                   err: torch.Tensor, cw: torch.Tensor, rounds: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Alternate the (weighted) least-squares scale for the chosen codes and the nearest codes for that scale
    (Lloyd steps on the scale), keeping a group's new pair only where its error falls: never worse than the clip
    search."""
    for _ in range(rounds):
        levels = codebook[codes]
        scale_ls = ((cw * wg * levels).sum(-1) / (cw * levels.square()).sum(-1).clamp(min=1e-12))
        scale_ls = scale_ls.half().float().clamp(min=6e-8)
        new_codes = nearest_codes(wg / scale_ls.unsqueeze(-1), codebook)
        new_err = _group_error(codebook[new_codes] * scale_ls.unsqueeze(-1) - wg, cw)
        better = new_err < err
        if not bool(better.any()):
            break
        err = torch.where(better, new_err, err)
        codes = torch.where(better.unsqueeze(-1), new_codes, codes)
        scale = torch.where(better, scale_ls, scale)
    return codes, scale


def make_codebook(weight: torch.Tensor, bits: int, group_size: int, kind: str) -> torch.Tensor:
    if kind == "uniform":
        return uniform_codebook(bits)
    wg = group_view(weight, group_size)
    return fit_twin_log(wg / wg.abs().amax(-1, keepdim=True).clamp(min=1e-8), bits)


def quantize_weight(weight: torch.Tensor, bits: int, group_size: int, kind: str, clip_search: bool = True,
                    channel_weight: torch.Tensor | None = None, rows: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes (uint8), fp16 scales, fp32 codebook) for one weight matrix (activation-aware when `channel_weight`).
    Rows are independent, so they are searched `rows` at a time (`row_chunk(K)` when None): the search's float
    temporaries stay those of one chunk, with the same result as all rows at once."""
    codebook = make_codebook(weight, bits, group_size, kind)
    n, k = weight.shape
    row_chunk_ = rows or row_chunk(k)
    codes = torch.empty(n, k, dtype=torch.uint8, device=weight.device)
    scales = torch.empty(n, k // group_size, dtype=torch.float16, device=weight.device)
    for r in range(0, n, row_chunk_):
        codes[r:r + row_chunk_], scales[r:r + row_chunk_] = quantize_groups(
            weight[r:r + row_chunk_], codebook, group_size, clip_search, channel_weight)
    return codes, scales, codebook


def dequantize_weight(codes: torch.Tensor, scales: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    n, k = codes.shape
    groups = scales.shape[1]
    return (codebook[codes.long()].view(n, groups, k // groups) * scales.float().unsqueeze(-1)).view(n, k)
