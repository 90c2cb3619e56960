"""The Triton int8 quantizer and grouped int8 GEMM against their torch references (TRITON_INTERPRET=1 on CPU)."""
from __future__ import annotations

import os

import pytest
import torch

from dit_accel.kernels.quant.reference import int8_linear_ref, quantize_int8_groups


def test_reference_int8_quantization_error_is_half_a_step():
    x = torch.randn(7, 64, generator=torch.Generator().manual_seed(0))
    q, s = quantize_int8_groups(x, 16)
    back = (q.float().view(7, 4, 16) * s.unsqueeze(-1)).view(7, 64)
    step = s.repeat_interleave(16, dim=1)
    assert bool(((back - x).abs() <= step / 2 + 1e-6).all())


def test_reference_gemm_equals_dequantized_matmul():
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(6, 64, generator=gen), torch.randn(10, 64, generator=gen)
    xq, xs = quantize_int8_groups(x, 16)
    wq, ws = quantize_int8_groups(w, 16)
    xd = (xq.float().view(6, 4, 16) * xs.unsqueeze(-1)).view(6, 64)
    wd = (wq.float().view(10, 4, 16) * ws.unsqueeze(-1)).view(10, 64)
    torch.testing.assert_close(int8_linear_ref(xq, xs, wq, ws), xd @ wd.T, rtol=1e-5, atol=1e-4)
    # one scale per row on either side broadcasts over the groups
    wq1, ws1 = quantize_int8_groups(w, 64)
    wd1 = wq1.float() * ws1
    torch.testing.assert_close(int8_linear_ref(xq, xs, wq1, ws1), xd @ wd1.T, rtol=1e-5, atol=1e-4)


triton_interpret = pytest.mark.skipif(
    not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="Triton needs a GPU, or TRITON_INTERPRET=1 to run on the CPU")


@triton_interpret
@pytest.mark.parametrize("m,k,group", [(5, 48, 16), (3, 40, 40)])
def test_triton_quantizer_matches_reference(m, k, group):
    pytest.importorskip("triton")
    from dit_accel.kernels.quant.int8_gemm import quantize_rows_int8
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
    x[0, :8] = torch.tensor([127.0, 63.5, -63.5, 0.5, -0.5, 1.5, 2.5, 0.0])  # ties round half to even
    q, s = quantize_rows_int8(x.to(device), group)
    q_ref, s_ref = quantize_int8_groups(x, group)
    torch.testing.assert_close(s.cpu(), s_ref)
    assert torch.equal(q.cpu(), q_ref)


@triton_interpret
@pytest.mark.parametrize("m,n,k,xg,wg", [(5, 24, 64, 4, 4), (9, 16, 32, 1, 1), (3, 8, 64, 4, 1)])
def test_triton_gemm_matches_reference(m, n, k, xg, wg):
    pytest.importorskip("triton")
    from dit_accel.kernels.quant.int8_gemm import int8_gemm
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(m + n)
    x, w, bias = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen), torch.randn(n, generator=gen)
    xq, xs = quantize_int8_groups(x, k // xg)
    wq, ws = quantize_int8_groups(w, k // wg)
    want = int8_linear_ref(xq, xs, wq, ws, bias)
    got = int8_gemm(*(t.to(device) for t in (xq, xs, wq, ws, bias)), out_dtype=torch.float32, block=(16, 16, 16))
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-3)
