"""Our quantizer writing ComfyUI core's own W4A8 format ("asym_w4a8_int8", comfy-kitchen's AsymW4A8Int8Layout), so
the file loads in plain ComfyUI (0.33+) with no pack installed.

What core computes from the stored tensors (read in comfy-kitchen's eager backend, `backends/eager/w4a8_int8.py`):
  q[n, k]  = clamp(round(codebook[code[n, k]] * float(s_rel[n, k // group])), -127, 127)     an int8 weight
  W_rot    = q * s_channel[n]                                                                  (rotated basis)
  y        = int8(x H) @ q^T * s_x * s_channel      H: regular Hadamard on groups of `convrot_groupsize` channels,
                                                    x quantized to int8 per token (dynamic)
The file holds `code` (4 bits, two per byte, even column in the low nibble), `s_rel` (fp8 e4m3 per row and group
of 16), `s_channel` (fp32 per row) and `codebook` (16 fp32 values, free per layer). Core's own quantizer picks the
codebook (a fixed Gaussian Lloyd-Max table) and each group's scale from the weight alone. The format leaves every
one of those stored values to the writer, so ours chooses them against the layer's output error:
  * the codebook: Lloyd's k-means on the rotated, group-normalised weights of this layer;
  * each group's fp8 scale: a search over clipping ratios and the neighbouring fp8 values, scored on the int8
    levels core will actually decode (rounding and clamping included), weighted by E[x_k^2] when calibrated;
  * the codes: GPTQ error compensation (Frantar et al.) in the rotated basis, with the rotated Gram matrix
    H^T E[x x^T] H, rounding each column to the nearest of its group's 16 decoded levels (calibration="gptq").
Activations stay core's (int8 per token after the rotation): nothing about the file changes.
"""
from __future__ import annotations

import torch

from .config import CoreW4A8Config
from .gptq import gptq_round
from .twin_log import row_chunk
from .rotation import regular_hadamard

FORMAT = "asym_w4a8_int8"
_CLIP_RATIOS = (1.0, 0.9, 0.8, 0.7)
_FP8 = torch.float8_e4m3fn
_INT8_MAX = 127.0
_FIT_SAMPLE = 1 << 16


def rotate(matrix: torch.Tensor, group: int) -> torch.Tensor:
    """matrix @ blockdiag(H) on the last dimension (H symmetric and orthogonal: rotating twice is the identity)."""
    h = regular_hadamard(group).to(matrix.device)
    shape = matrix.shape
    return (matrix.float().reshape(*shape[:-1], shape[-1] // group, group) @ h).reshape(shape)


def fit_codebook(normalised: torch.Tensor, levels: int = 16, rounds: int = 20) -> torch.Tensor:
    """Lloyd's k-means codebook (sorted) on group-normalised values in [-1, 1], from a fixed-stride sample."""
    flat = normalised.reshape(-1).float()
    if flat.numel() > _FIT_SAMPLE:
        flat = flat[:: flat.numel() // _FIT_SAMPLE]
    flat = flat.sort().values
    cb = torch.quantile(flat, (torch.arange(levels, dtype=torch.float32) + 0.5) / levels)
    for _ in range(rounds):
        idx = torch.bucketize(flat, (cb[1:] + cb[:-1]) / 2)
        sums = torch.zeros(levels).index_add_(0, idx, flat)
        counts = torch.zeros(levels).index_add_(0, idx, torch.ones_like(flat))
        cb = torch.where(counts > 0, sums / counts.clamp(min=1), cb).sort().values
    return cb / cb.abs().max()


def _fit_sample(w_rot: torch.Tensor, group: int) -> torch.Tensor:
    """The group-normalised values `fit_codebook` samples (every (numel // _FIT_SAMPLE)-th), computed for the
    sampled values only: the same numbers as normalising the whole layer first."""
    flat = w_rot.reshape(-1)
    index = torch.arange(0, flat.numel(), max(1, flat.numel() // _FIT_SAMPLE), device=w_rot.device)
    absmax = w_rot.reshape(-1, group)[index // group].abs().amax(-1).clamp(min=1e-8)
    return flat[index] / absmax


def _fp8_neighbours(target: torch.Tensor) -> list[torch.Tensor]:
    """fp8 e4m3 values at and next to `target` (positive), as float32: the scales the format can store."""
    bits = target.clamp(min=2 ** -9, max=448.0).to(_FP8).view(torch.uint8).to(torch.int16)
    out = []
    for step in (-1, 0, 1):
        b = (bits + step).clamp(1, 0x7E).to(torch.uint8)  # 0x7F is NaN in e4m3fn
        out.append(b.view(_FP8).float())
    return out


def decoded_levels(codebook: torch.Tensor, s_rel: torch.Tensor) -> torch.Tensor:
    """The int8 levels core decodes for each group: round(codebook * s_rel), clamped to +-127 (..., 16)."""
    return (codebook * s_rel.float().unsqueeze(-1)).round().clamp(-_INT8_MAX, _INT8_MAX)


def nearest_level(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of each row's sorted levels: values (..., m), levels (..., 16) -> codes (..., m)."""
    pos = torch.searchsorted(levels.contiguous(), values.contiguous())
    lo = (pos - 1).clamp(0, levels.shape[-1] - 1)
    hi = pos.clamp(0, levels.shape[-1] - 1)
    d_lo = (values - levels.gather(-1, lo)).abs()
    d_hi = (values - levels.gather(-1, hi)).abs()
    return torch.where(d_hi < d_lo, hi, lo)


def choose_scales(columns: torch.Tensor, hdiag: torch.Tensor, codebook: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's fp8 group scale s_rel and codes for groups `columns` (m, group) in int8 units: the clipping ratio
    and neighbouring fp8 value whose decoded int8 levels give the least error, weighted by E[x_k^2] (`hdiag`)."""
    absmax = columns.abs().amax(-1).clamp(min=1e-6)
    cw = hdiag.clamp(min=0) / hdiag.clamp(min=0).mean().clamp(min=1e-30)
    cw = cw.clamp(min=1e-4)  # a dead channel still gets a say, however small
    cb_max = codebook.abs().max()
    best_err = best_s = best_codes = None
    for ratio in _CLIP_RATIOS:
        for s in _fp8_neighbours(absmax * ratio / cb_max):
            levels = decoded_levels(codebook, s)                                # (m, 16)
            codes = nearest_level(columns, levels)
            err = ((levels.gather(-1, codes) - columns).square() * cw).sum(-1)
            if best_err is None:
                best_err, best_s, best_codes = err, s, codes
            else:
                better = err < best_err
                best_err = torch.where(better, err, best_err)
                best_s = torch.where(better, s, best_s)
                best_codes = torch.where(better.unsqueeze(-1), codes, best_codes)
    return best_s, best_codes


class W4A8Grid:
    """The values a core W4A8 layer can store, in int8 units (weight / s_channel): per row and group of 16, the 16
    levels round(codebook * s_rel) with s_rel an fp8 value. `start_group` picks each row's s_rel for a group."""

    def __init__(self, codebook: torch.Tensor, group_size: int, n: int, k: int, device: torch.device):
        self.codebook, self.group_size = codebook.to(device), group_size
        self.codes = torch.empty(n, k, dtype=torch.uint8, device=device)  # 16 levels: a byte per weight
        self.s_rel = torch.empty(n, k // group_size, dtype=torch.float32, device=device)
        self.levels = None

    def rows(self, start: int, end: int) -> "W4A8Grid":
        """The same grid for rows start:end, writing into this grid's codes and scales."""
        part = object.__new__(W4A8Grid)
        part.codebook, part.group_size, part.levels = self.codebook, self.group_size, None
        part.codes, part.s_rel = self.codes[start:end], self.s_rel[start:end]
        return part

    def start_group(self, g: int, columns: torch.Tensor, hdiag: torch.Tensor) -> None:
        s, _ = choose_scales(columns, hdiag, self.codebook)
        self.s_rel[:, g] = s
        self.levels = decoded_levels(self.codebook, s)

    def round(self, values: torch.Tensor, col: int) -> torch.Tensor:
        code = nearest_level(values.unsqueeze(-1), self.levels).squeeze(-1)
        self.codes[:, col] = code.to(self.codes.dtype)
        return self.levels.gather(-1, code.unsqueeze(-1)).squeeze(-1)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte, the even column in the low nibble, as int8 (core's storage dtype)."""
    c = codes.to(torch.uint8)  # codes < 16: the nibble arithmetic stays inside a byte
    return ((c[:, 0::2] & 0xF) | ((c[:, 1::2] & 0xF) << 4)).view(torch.int8)


def quantize_core_w4a8(weight: torch.Tensor, config: CoreW4A8Config, gram: torch.Tensor | None = None
                       ) -> dict[str, torch.Tensor | int]:
    """The stored tensors of one layer in core's W4A8 format: qdata (N, K/2) int8, s_rel (N, K/group) fp8,
    s_channel (N,) fp32, codebook (16,) fp32, and the layer's group sizes."""
    n, k = weight.shape
    group = config.group_size
    rot = config.convrot_groupsize
    if config.for_width(k) != config:
        raise ValueError(f"a {n}x{k} layer cannot be stored in core's W4A8 format with {config} (K must be a "
                         "multiple of 16, group_size and convrot_groupsize; config.for_width(K) picks what fits)")
    if config.needs_calibration and gram is None:
        raise ValueError("calibration='gptq' needs the layer's input Gram matrix: collect calibration statistics "
                         "with gram=True first, or set calibration='none'")
    chunk = row_chunk(k)
    # One float copy of the layer, rotated and then scaled in place a chunk of rows at a time (no whole-layer
    # temporaries: a Wan 14B FFN layer is 283 MB per fp32 copy).
    w_rot = torch.empty(n, k, dtype=torch.float32, device=weight.device)
    s_channel = torch.empty(n, dtype=torch.float32, device=weight.device)
    for r in range(0, n, chunk):
        w_rot[r:r + chunk] = rotate(weight[r:r + chunk], rot)
        s_channel[r:r + chunk] = (w_rot[r:r + chunk].abs().amax(-1) / _INT8_MAX).clamp(min=1e-8)
    codebook = fit_codebook(_fit_sample(w_rot, group))
    w_int = w_rot.div_(s_channel.unsqueeze(-1))                               # int8 units (in place)
    grid = W4A8Grid(codebook, group, n, k, weight.device)
    if config.needs_calibration:
        # H^T G H (G symmetric), block by block as GPTQ reaches each Hessian block (a multiple of the rotation group).
        gptq_round(w_int, gram, grid, group,
                   block_transform=lambda g: rotate(rotate(g.float(), rot).T.contiguous(), rot))
    else:
        ones = torch.ones(group, device=weight.device)
        for r in range(0, n, chunk):  # rows are independent: the search's temporaries stay one chunk's
            s_rel, codes = choose_scales(w_int[r:r + chunk].reshape(-1, group), ones, codebook)
            grid.s_rel[r:r + chunk] = s_rel.view(-1, k // group)
            grid.codes[r:r + chunk] = codes.view(-1, k)
    return {"qdata": pack_nibbles(grid.codes), "s_rel": grid.s_rel.to(_FP8), "s_channel": s_channel.float(),
            "codebook": codebook.float(), "group_size": group, "convrot_groupsize": rot}


def dequantize_core_w4a8(qdata: torch.Tensor, s_rel: torch.Tensor, s_channel: torch.Tensor, codebook: torch.Tensor,
                         group_size: int, convrot_groupsize: int) -> torch.Tensor:
    """The float weight core's format decodes to (the torch reference for tests and weight-error reports)."""
    b = qdata.view(torch.uint8).to(torch.long)
    n = b.shape[0]
    codes = torch.stack([b & 0xF, b >> 4], -1).reshape(n, -1)
    levels = decoded_levels(codebook.float(), s_rel.float())                 # (n, groups, 16)
    q = levels.gather(-1, codes.view(n, -1, group_size)).reshape(n, -1)
    return rotate(q * s_channel.float().unsqueeze(-1), convrot_groupsize)
