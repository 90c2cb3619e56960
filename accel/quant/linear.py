"""Drop-in replacements for nn.Linear holding quantized weights; their matmuls live in `kernels/quant`.

`CodebookLinear`: packed b-bit codes + per-group fp16 scales + a per-layer codebook (TLQ or uniform), W*A16.
`Int8Linear`: int8 weights with per-row or per-group scales, an optional block-diagonal input rotation, and dynamic
int8 activations (W8A8). Both keep the bias in 16 bits and report `weight_bytes()` (stored weight bytes with scales,
codebook and rotation) next to `dense_weight_bytes()` (the same weight in 16 bits).
"""
from __future__ import annotations

import torch
from torch import nn

from ...kernels.quant import codebook_linear, int8_linear, pack_codes, plane_widths
from ...kernels.quant.reference import dequantize_codebook, quantize_int8_groups
from .rotation import block_rotation, rotate_activation


def _bias_copy(linear: nn.Linear) -> torch.Tensor | None:
    return None if linear.bias is None else linear.bias.detach().clone()


class CodebookLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int,
                 bias: torch.Tensor | None, planes: list[torch.Tensor], scales: torch.Tensor,
                 codebook: torch.Tensor):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = bits, group_size
        for i, plane in enumerate(planes):
            self.register_buffer(f"plane{i}", plane)
        self.register_buffer("scales", scales)
        self.register_buffer("codebook", codebook.float())
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @classmethod
    def from_codes(cls, linear: nn.Linear, codes: torch.Tensor, scales: torch.Tensor, codebook: torch.Tensor,
                   bits: int, group_size: int) -> "CodebookLinear":
        return cls(linear.in_features, linear.out_features, bits, group_size, _bias_copy(linear),
                   pack_codes(codes, bits), scales, codebook)

    @property
    def planes(self) -> list[torch.Tensor]:
        return [getattr(self, f"plane{i}") for i in range(len(plane_widths(self.bits)))]

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_codebook(self.planes, self.bits, self.codebook, self.scales, self.in_features, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return codebook_linear(x, self.planes, self.bits, self.codebook, self.scales, bias)

    def weight_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.planes, self.scales, self.codebook))

    def dense_weight_bytes(self) -> int:
        return self.in_features * self.out_features * 2

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}")


class CodebookA8Linear(CodebookLinear):
    """W4A8: codebook weights stored in the rotated basis; the input is rotated (R = diag(1/s) H per block) and
    quantized to int8 per token and per weight group before the codebook GEMM."""

    def __init__(self, *args, rotation_group: int, smooth: torch.Tensor | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rotation_group = rotation_group
        self.register_buffer("smooth", None if smooth is None else smooth.float())
        blocks = block_rotation(self.in_features, rotation_group, smooth) if rotation_group else None
        self.register_buffer("rotation", blocks, persistent=False)  # rebuilt from (group, smooth), never stored

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rotation is not None:
            x = rotate_activation(x, self.rotation)
        q, scale = quantize_int8_groups(x.reshape(-1, self.in_features), self.group_size)
        groups = scale.shape[1]
        x8 = (q.float().view(-1, groups, self.group_size) * scale.unsqueeze(-1)).view(x.shape).to(x.dtype)
        return super().forward(x8)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        w = super().dequantized_weight(torch.float32)
        if self.rotation is not None:
            n, k = w.shape
            g, size, _ = self.rotation.shape
            w = (w.view(n, g, size).transpose(0, 1) @ self.rotation.transpose(1, 2)).transpose(0, 1).reshape(n, k)
        return w.to(dtype)

    def weight_bytes(self) -> int:
        return super().weight_bytes() + (0 if self.smooth is None else self.smooth.numel() * 4)


class Int8Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None, qweight: torch.Tensor,
                 weight_scale: torch.Tensor, act_group: int, rotation_group: int, smooth: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.act_group, self.rotation_group = act_group, rotation_group
        self.register_buffer("qweight", qweight)
        self.register_buffer("weight_scale", weight_scale.float())
        self.register_buffer("smooth", None if smooth is None else smooth.float())
        # Rebuilt from (group, smooth), never stored: a Hadamard block is a constant.
        blocks = block_rotation(in_features, rotation_group, smooth) if rotation_group else None
        self.register_buffer("rotation", blocks, persistent=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @property
    def kind(self) -> str:
        return "none" if not self.rotation_group else ("hadamard" if self.smooth is None else "outlier_aware")

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight in the original basis: W = W' R^T per block (R = diag(1/s) H)."""
        n, k = self.qweight.shape
        groups = self.weight_scale.shape[1]
        w = (self.qweight.float().view(n, groups, k // groups) * self.weight_scale.unsqueeze(-1)).view(n, k)
        if self.rotation is not None:
            g, size, _ = self.rotation.shape
            w = (w.view(n, g, size).transpose(0, 1) @ self.rotation.transpose(1, 2)).transpose(0, 1).reshape(n, k)
        return w.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rotation is not None:
            x = rotate_activation(x, self.rotation)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return int8_linear(x, self.qweight, self.weight_scale, self.act_group, bias)

    def weight_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.qweight, self.weight_scale, self.smooth)
                   if t is not None)

    def dense_weight_bytes(self) -> int:
        return self.in_features * self.out_features * 2

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rotation={self.kind}, "
                f"act_group={self.act_group}")


QUANTIZED_LINEARS = (CodebookLinear, Int8Linear)  # CodebookA8Linear is a CodebookLinear
