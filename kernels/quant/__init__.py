"""Quantized GEMMs: codebook dequant-GEMM (W3/W4/W6/W8 A16) and grouped int8 GEMM (W8A8).

Each op has a Triton kernel (CUDA) and a plain-torch reference (`reference.py`) that is the test oracle and the
fallback on CPU or where Triton is missing. `dispatch.py` picks between them.
"""
from .dispatch import codebook_linear, int8_linear, triton_available
from .packing import pack_codes, packed_bytes, plane_widths, unpack_codes
from .reference import quantize_int8_groups

__all__ = ["codebook_linear", "int8_linear", "triton_available", "pack_codes", "packed_bytes", "plane_widths",
           "unpack_codes", "quantize_int8_groups"]
