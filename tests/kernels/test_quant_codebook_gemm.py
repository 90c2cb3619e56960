"""The Triton codebook dequant-GEMM against its torch reference, on odd small shapes under TRITON_INTERPRET=1."""
from __future__ import annotations

import os

import pytest
import torch

from dit_accel.kernels.quant import pack_codes, unpack_codes
from dit_accel.kernels.quant.reference import codebook_linear_ref, dequantize_codebook


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_pack_roundtrip(bits):
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2 ** bits, (5, 48), generator=gen)
    planes = pack_codes(codes, bits)
    assert sum(p.numel() for p in planes) == 5 * 48 * bits // 8  # exactly `bits` bits per weight
    assert torch.equal(unpack_codes(planes, bits, 48), codes)


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_codes(torch.zeros(2, 12, dtype=torch.int64), 4)
    with pytest.raises(ValueError, match="out of range"):
        pack_codes(torch.full((2, 16), 16), 4)
    with pytest.raises(ValueError, match="not supported"):
        pack_codes(torch.zeros(2, 16, dtype=torch.int64), 5)


def test_reference_dequantizes_codebook_times_group_scale():
    codes = torch.tensor([[0, 1, 2, 3, 3, 2, 1, 0]])
    codebook = torch.tensor([-1.0, -0.25, 0.25, 1.0])
    scales = torch.tensor([[2.0, 0.5]])
    w = dequantize_codebook(pack_codes(codes, 2), 2, codebook, scales, 8)
    assert torch.equal(w, torch.tensor([[-2.0, -0.5, 0.5, 2.0, 0.5, 0.125, -0.125, -0.5]]))


triton_interpret = pytest.mark.skipif(
    not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="Triton needs a GPU, or TRITON_INTERPRET=1 to run on the CPU")


@triton_interpret
@pytest.mark.parametrize("bits,m,n,k,group", [(4, 5, 24, 64, 32), (3, 17, 40, 96, 32), (6, 3, 16, 64, 64),
                                              (8, 9, 8, 32, 16)])
def test_triton_matches_reference(bits, m, n, k, group):
    pytest.importorskip("triton")
    from dit_accel.kernels.quant.codebook_gemm import codebook_gemm
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(m * n + bits)
    codes = torch.randint(0, 2 ** bits, (n, k), generator=gen)
    codebook = torch.linspace(-1, 1, 2 ** bits) ** 3
    scales = (torch.rand(n, k // group, generator=gen) + 0.5).half()
    x = torch.randn(m, k, generator=gen)
    bias = torch.randn(n, generator=gen)
    planes = [p.to(device) for p in pack_codes(codes, bits)]
    want = codebook_linear_ref(x, pack_codes(codes, bits), bits, codebook, scales, bias)
    got = codebook_gemm(x.to(device), planes, bits, codebook.to(device), scales.to(device), bias.to(device),
                        block=(16, 16, 16))
    torch.testing.assert_close(got.cpu(), want, rtol=2e-3, atol=2e-3)
