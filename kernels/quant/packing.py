"""Bit-plane packing of low-bit weight codes: the storage layout every quant kernel reads.

A b-bit code is split into planes of 4, 2 and 1 bits (b = 3 -> 2+1, 4 -> 4, 6 -> 4+2, 8 -> 8 bits in one byte),
and each plane packs its bits along K into uint8: a 4-bit plane holds 2 codes per byte, a 2-bit plane 4, a 1-bit
plane 8. Why planes: odd widths then cost exactly b bits per weight, and a kernel unpacks any width with the same
shift-and-mask per plane (no code straddles a byte), which keeps the Triton inner loop branch-free.

Layout for a (N, K) code matrix: plane p of width w is a (N, K * w / 8) uint8 tensor; code bit offset of plane p is
the sum of the widths of the planes before it (low bits first).
"""
from __future__ import annotations

import torch

PLANES: dict[int, tuple[int, ...]] = {2: (2,), 3: (2, 1), 4: (4,), 6: (4, 2), 8: (8,)}


def plane_widths(bits: int) -> tuple[int, ...]:
    if bits not in PLANES:
        raise ValueError(f"{bits}-bit codes are not supported; choose one of {sorted(PLANES)}")
    return PLANES[bits]


def pack_codes(codes: torch.Tensor, bits: int) -> list[torch.Tensor]:
    """(N, K) integer codes in [0, 2**bits) -> one uint8 tensor per bit plane. K must be a multiple of 8."""
    n, k = codes.shape
    if k % 8:
        raise ValueError(f"K={k} must be a multiple of 8 to pack {bits}-bit codes")
    if int(codes.min()) < 0 or int(codes.max()) >= 2 ** bits:
        raise ValueError(f"codes out of range for {bits} bits")
    codes = codes.to(torch.uint8)  # in range, so every shift below stays inside a byte: 1 byte per code of work
    planes, shift = [], 0
    for width in plane_widths(bits):
        part = (codes >> shift) & ((1 << width) - 1)
        per_byte = 8 // width
        part = part.view(n, k // per_byte, per_byte)
        packed = torch.zeros(n, k // per_byte, dtype=torch.uint8, device=codes.device)
        for j in range(per_byte):
            packed |= part[..., j] << (j * width)
        planes.append(packed)
        shift += width
    return planes


def unpack_codes(planes: list[torch.Tensor], bits: int, k: int) -> torch.Tensor:
    """Inverse of `pack_codes`: (N, K) int64 codes."""
    widths = plane_widths(bits)
    if len(planes) != len(widths):
        raise ValueError(f"{bits}-bit codes need {len(widths)} planes, got {len(planes)}")
    codes, shift = None, 0
    for width, packed in zip(widths, planes):
        per_byte = 8 // width
        if packed.shape[-1] * per_byte != k:
            raise ValueError(f"plane of width {width} has {packed.shape[-1]} bytes per row, expected {k // per_byte}")
        p = packed.to(torch.int64)
        parts = torch.stack([(p >> (j * width)) & ((1 << width) - 1) for j in range(per_byte)], dim=-1)
        part = parts.reshape(p.shape[0], k) << shift
        codes = part if codes is None else codes | part
        shift += width
    return codes


def packed_bytes(n: int, k: int, bits: int) -> int:
    """Bytes the packed codes of an (N, K) matrix take."""
    return n * k * bits // 8
