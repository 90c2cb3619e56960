"""Block-diagonal rotations for activation quantization: Hadamard (ConvRot) and LRQ-DiT's Adaptive Rotation Scheme.

A linear layer y = x W^T is unchanged by x -> x R, W -> W R^{-T} for any invertible block-diagonal R, so a rotation
that spreads outliers across channels makes per-token int8 activations far more accurate at no cost in the weight
(it is folded in offline). ComfyUI's ConvRot uses a regular Hadamard matrix (Kronecker powers of a 4x4 Hadamard,
normalised) on groups of 256 channels; we build the same matrix so our W8 files are exactly core's format.

ARS (LRQ-DiT, arXiv 2508.03485) chooses per layer from calibration statistics: mild outliers -> plain Hadamard;
salient outliers concentrated in a few channels -> an outlier-aware rotation. Our outlier-aware rotation first
divides each channel by a smoothing factor s_j (folded into the weight columns, SmoothQuant-style), so the salient
channels are tamed before the Hadamard spreads what is left: R = diag(1/s) H per block, W' = W diag(s) H.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

_H4 = torch.tensor([[1, 1, 1, -1], [1, 1, -1, 1], [1, -1, 1, 1], [-1, 1, 1, 1]], dtype=torch.float64)


def regular_hadamard(size: int) -> torch.Tensor:
    """Normalised regular Hadamard matrix of a power-of-4 size (symmetric and orthogonal: H @ H = I)."""
    if size < 4 or size & (size - 1) or (size.bit_length() - 1) % 2:
        raise ValueError(f"a regular Hadamard matrix needs a power-of-4 size, got {size}")
    h = _H4
    while h.shape[0] < size:
        h = torch.kron(h, _H4)
    return (h / size ** 0.5).float()


@dataclass
class ChannelStats:
    """Activation statistics over calibration tokens, for one linear layer: the per-channel absmax (ARS's outlier
    test and smoothing) and, when asked for, the input Gram matrix (GPTQ)."""

    absmax: torch.Tensor
    tokens: int = 0
    gram_sum: torch.Tensor | None = None   # sum of x x^T (K, K), only when asked for (GPTQ): K^2 floats per layer
    keep_gram: bool = False
    gram_block: int = 0  # > 0 and < K: keep only the (K/B, B, B) diagonal blocks of the Gram matrix (K*B floats)

    def update(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1, x.shape[-1]).float()
        self.absmax = torch.maximum(self.absmax, flat.abs().amax(0).cpu())
        self.tokens += flat.shape[0]
        if self.keep_gram:
            k = flat.shape[1]
            if 0 < self.gram_block < k:
                per_block = flat.view(len(flat), k // self.gram_block, self.gram_block).transpose(0, 1)
                gram = torch.bmm(per_block.transpose(1, 2), per_block).cpu()
            else:
                gram = (flat.T @ flat).cpu()
            if self.gram_sum is None:
                self.gram_sum = gram
            else:
                self.gram_sum += gram

    @property
    def gram(self) -> torch.Tensor | None:
        """E[x x^T]: the layer's output-error metric for weight rounding (GPTQ's Hessian up to a factor 2); (K, K),
        or its (K/B, B, B) diagonal blocks when `gram_block` splits the layer."""
        return None if self.gram_sum is None or not self.tokens else self.gram_sum / self.tokens

    @property
    def outlier_ratio(self) -> float:
        return float(self.absmax.max() / self.absmax.median().clamp(min=1e-8))


def smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|x_j|^alpha / max|W_:j|^(1-alpha), normalised to geometric mean 1 (keeps both sides in range)."""
    w_absmax = weight.float().abs().amax(0).clamp(min=1e-5)
    s = act_absmax.float().clamp(min=1e-5).pow(alpha) / w_absmax.pow(1 - alpha)
    return s / s.log().mean().exp()


def choose_rotation(stats: ChannelStats | None, outlier_ratio: float) -> str:
    """ARS decision: "outlier_aware" when a few channels dominate, else "hadamard" (also without calibration)."""
    if stats is None:
        return "hadamard"
    return "outlier_aware" if stats.outlier_ratio > outlier_ratio else "hadamard"


def block_rotation(in_features: int, group: int, smooth: torch.Tensor | None = None) -> torch.Tensor:
    """The (G, group, group) blocks of R = diag(1/s) H; x is rotated as x_g @ R_g."""
    if in_features % group:
        raise ValueError(f"in_features {in_features} is not a multiple of the rotation group {group}")
    h = regular_hadamard(group)
    blocks = h.expand(in_features // group, group, group).clone()
    if smooth is not None:
        blocks = blocks / smooth.view(-1, group, 1)
    return blocks


def rotate_weight(weight: torch.Tensor, group: int, smooth: torch.Tensor | None = None) -> torch.Tensor:
    """W' = W diag(s) H per block, so that (x R) W'^T = x W^T (H symmetric and orthogonal)."""
    n, k = weight.shape
    w = weight.float() if smooth is None else weight.float() * smooth.view(1, k)
    return (w.view(n, k // group, group) @ regular_hadamard(group).T).view(n, k)


def rotate_activation(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    g, size, _ = blocks.shape
    shape = x.shape
    xg = x.reshape(-1, g, size).transpose(0, 1)                      # (G, M, size)
    out = torch.bmm(xg, blocks.to(x.dtype))
    return out.transpose(0, 1).reshape(shape)
