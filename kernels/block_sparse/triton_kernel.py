"""Triton block-sparse flash-attention forward (FlashAttention-2 structure) with an optional PISA correction.

Algorithm: one program per (query block, batch x head). It loads its BLOCK_M query rows once, then walks the key
blocks listed in `kv_indices[b, h, qb, :kv_counts[b, h, qb]]`, each split into BLOCK_K / BLOCK_N tiles, keeping the
online-softmax state (running max m, running sum l, accumulator acc) in fp32 and in the log2 domain (scores are
multiplied by scale * log2(e) so exp2 replaces exp). After the last tile the correction (numerator, denominator, shift)
is merged as one more "tile" of the same softmax, then acc / l is stored. Rows past q_len and keys past k_len are
masked; a row with l == 0 (nothing visited, no correction) is written as zeros.

The layout fixes the tiling: BLOCK_M == layout.block_q, and BLOCK_N divides layout.block_k. On GPU, `triton.autotune`
picks BLOCK_N / num_warps / num_stages per (power-of-two length bucket, head_dim, block sizes, correction, dtype);
under TRITON_INTERPRET=1 (CPU tensors, tests) one fixed configuration runs.

Triton is imported lazily, on the first launch: the interpreter only works if TRITON_INTERPRET=1 is set before
`import triton` (triton.language's own helpers are jitted at import time), so importing this package must not import
it. Kernels are built per interpreter mode because `triton.jit` decides at decoration time whether it compiles.
"""
from __future__ import annotations

import contextlib
import functools
import math

import torch

from ..capability import interpreter_ready, interpreting, triton_importable
from .layout import BlockLayout, SoftmaxCorrection

LOG2E = 1.4426950408889634
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MIN_DIM, MAX_DIM = 16, 256  # tl.dot needs >= 16 along every dimension; 256 is the largest head_dim that fits SRAM
MIN_BLOCK, MAX_BLOCK = 16, 256


triton = tl = None  # bound by _import_triton() on the first launch; the kernel body resolves `tl` from here


def _import_triton() -> None:
    global triton, tl
    if triton is None:
        import triton as _triton
        import triton.language as _tl
        triton, tl = _triton, _tl


def _pow2_in(x: int, lo: int, hi: int) -> bool:
    return lo <= x <= hi and x & (x - 1) == 0


def unsupported_reason(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout) -> str | None:
    """Why the kernel cannot run these inputs (None if it can). Shapes are assumed checked already."""
    if not triton_importable():
        return "triton is not installed (pip install triton)"
    if q.device.type != "cuda" and not (q.device.type == "cpu" and interpreter_ready()):
        why = " (triton was imported before it was set)" if interpreting() else ""
        return (f"tensors on {q.device.type} (the kernel runs on CUDA, or on CPU under TRITON_INTERPRET=1 set "
                f"before triton is imported){why}")
    if q.dtype not in SUPPORTED_DTYPES or not (q.dtype == k.dtype == v.dtype):
        return f"dtypes {q.dtype}/{k.dtype}/{v.dtype} (the kernel takes fp16, bf16 or fp32, one for q, k and v)"
    for name, dim in (("head_dim", q.shape[-1]), ("value head_dim", v.shape[-1])):
        if not _pow2_in(dim, MIN_DIM, MAX_DIM):
            return f"{name} {dim} (the kernel takes powers of two from {MIN_DIM} to {MAX_DIM})"
    for name, blk in (("block_q", layout.block_q), ("block_k", layout.block_k)):
        if not _pow2_in(blk, MIN_BLOCK, MAX_BLOCK):
            return f"layout {name} {blk} (the kernel takes powers of two from {MIN_BLOCK} to {MAX_BLOCK})"
    return None


def _block_sparse_fwd(
        Q, K, V, Out, KvIdx, KvCnt, CNum, CDen, CShift,
        qk_scale, q_len, k_len, heads, tune_bucket,
        stride_qb, stride_qh, stride_qm, stride_qd,
        stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd,
        stride_ob, stride_oh, stride_om, stride_od,
        stride_ib, stride_ih, stride_iq, stride_ik,
        stride_cb, stride_ch, stride_cq,
        stride_nb, stride_nh, stride_nm, stride_nd,
        stride_db, stride_dh, stride_dm,
        HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
        EVEN_M: tl.constexpr, EVEN_N: tl.constexpr, HAS_CORRECTION: tl.constexpr,
        INPUT_PRECISION: tl.constexpr):
    tl.static_assert(BLOCK_K % BLOCK_N == 0)
    SPLIT: tl.constexpr = BLOCK_K // BLOCK_N
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    # int64 so batch / head offsets cannot overflow on long sequences; in-head offsets stay int32 (cheaper).
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_dv = tl.arange(0, HEAD_DIM_V)
    row_ok = offs_m < q_len

    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    if EVEN_M:
        q = tl.load(q_ptrs)
    else:
        q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    idx_base = KvIdx + b * stride_ib + h * stride_ih + pid_m * stride_iq
    count = tl.load(KvCnt + b * stride_cb + h * stride_ch + pid_m * stride_cq)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_V], dtype=tl.float32)

    for t in range(0, count * SPLIT):
        kv_block = tl.load(idx_base + (t // SPLIT) * stride_ik)
        cols = kv_block * BLOCK_K + (t % SPLIT) * BLOCK_N + offs_n
        k_ptrs = k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd
        v_ptrs = v_base + cols[:, None] * stride_vn + offs_dv[None, :] * stride_vd
        if EVEN_N:
            k = tl.load(k_ptrs)
        else:
            k = tl.load(k_ptrs, mask=cols[None, :] < k_len, other=0.0)
        s = tl.dot(q, k, input_precision=INPUT_PRECISION) * qk_scale
        if not EVEN_N:
            s = tl.where(cols[None, :] < k_len, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A tile past k_len leaves a row at -inf; a zero reference keeps exp2 finite (all its p are 0 anyway).
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_ref[:, None])
        alpha = tl.math.exp2(m_i - m_ref)
        l_i = l_i * alpha + tl.sum(p, 1)
        if EVEN_N:
            v = tl.load(v_ptrs)
        else:
            v = tl.load(v_ptrs, mask=cols[:, None] < k_len, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=INPUT_PRECISION)
        m_i = m_new

    if HAS_CORRECTION:
        # The skipped blocks' estimate joins the same softmax: one more term with log2-scale shift * log2(e).
        shift = tl.load(CShift + b * stride_db + h * stride_dh + offs_m * stride_dm, mask=row_ok,
                        other=float("-inf")) * 1.4426950408889634
        den = tl.load(CDen + b * stride_db + h * stride_dh + offs_m * stride_dm, mask=row_ok, other=0.0)
        num = tl.load(CNum + b * stride_nb + h * stride_nh + offs_m[:, None] * stride_nm
                      + offs_dv[None, :] * stride_nd, mask=row_ok[:, None], other=0.0)
        m_new = tl.maximum(m_i, shift)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.math.exp2(m_i - m_ref)
        w = tl.math.exp2(shift - m_ref)
        acc = acc * alpha[:, None] + num * w[:, None]
        l_i = l_i * alpha + den * w

    out = tl.where(l_i[:, None] > 0, acc / tl.where(l_i > 0, l_i, 1.0)[:, None], 0.0)
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_dv[None, :] * stride_od
    if EVEN_M:
        tl.store(o_ptrs, out.to(Out.dtype.element_ty))
    else:
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None])


# Tuned per power-of-two length bucket (`tune_bucket`, unused by the kernel body), not per exact length, so a new
# resolution in the same bucket does not pay the autotuning compile time again.
AUTOTUNE_KEY = ["tune_bucket", "HEAD_DIM", "HEAD_DIM_V", "BLOCK_M", "BLOCK_K", "HAS_CORRECTION"]
SMEM_BYTES = 228 * 1024  # H100 / H200 opt-in shared memory per block: the estimate when the device does not say


@functools.lru_cache(maxsize=None)
def _smem_limit(device_index: int) -> int:
    props = torch.cuda.get_device_properties(device_index)
    return int(getattr(props, "shared_memory_per_block_optin", SMEM_BYTES))


def _autotune_configs() -> list:
    return [triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=s)
            for n in (32, 64, 128) for w in (4, 8) for s in (2, 3)]


def _config_fits(config, args: dict) -> bool:
    """Whether a config is worth compiling (each one costs seconds of compile time on the first call).

    BLOCK_N must tile the layout's key block; 32-wide tiles only for head_dim 256 (else a 64 or 128 tile is faster);
    4 warps spill registers once the accumulator is 128 x 128 (ptxas on sm_90); configs whose q + pipelined k / v
    tiles overflow the device's shared memory cannot launch. The autotuner also skips configs that fail.
    """
    n, block_k, block_m = config.kwargs["BLOCK_N"], args["BLOCK_K"], args["BLOCK_M"]
    d, dv = args["HEAD_DIM"], args["HEAD_DIM_V"]
    if block_k % n != 0 or (n == 32 and d < 256 and block_k > 32) or (d >= 256 and n > 64):
        return False
    if config.num_warps == 4 and block_m * max(d, dv) >= 128 * 128:
        return False
    q = args.get("Q")
    elem = q.element_size() if isinstance(q, torch.Tensor) else 2
    limit = _smem_limit(q.device.index or 0) if isinstance(q, torch.Tensor) and q.is_cuda else SMEM_BYTES
    return elem * (block_m * d + max(config.num_stages - 1, 1) * n * (d + dv)) <= limit


def _prune_configs(configs, named_args, **kwargs) -> list:
    args = {**named_args, **kwargs}
    fitting = [c for c in configs if _config_fits(c, args)]
    # Never leave the autotuner empty: the smallest tile that divides the key block always exists (block_k >= 16).
    return fitting or [triton.Config({"BLOCK_N": min(args["BLOCK_K"], 32)}, num_warps=4, num_stages=1)]


_KERNELS: dict[tuple[bool, bool], object] = {}


def _kernel(autotuned: bool):
    """The jitted kernel for the current interpreter mode (built on first use; see the module docstring)."""
    _import_triton()
    key = (interpreting(), autotuned)
    if key not in _KERNELS:
        jitted = triton.jit(_block_sparse_fwd)
        if autotuned:
            jitted = triton.autotune(configs=_autotune_configs(), key=AUTOTUNE_KEY,
                                     prune_configs_by={"early_config_prune": _prune_configs})(jitted)
        _KERNELS[key] = jitted
    return _KERNELS[key]


def _strides(t: torch.Tensor, dims: int) -> list[int]:
    """Strides of the first `dims` dims, 0 where the size is 1 (a layout / correction shared over batch or heads)."""
    return [0 if t.shape[i] == 1 else t.stride(i) for i in range(dims)]


def block_sparse_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout,
                                  correction: SoftmaxCorrection | None = None, scale: float | None = None,
                                  block_n: int | None = None) -> torch.Tensor:
    """Launch the kernel. Inputs must be checked (`reference.check_inputs`) and supported (`unsupported_reason`).

    `block_n` fixes the key tile (a power of two dividing block_k) instead of autotuning; under the interpreter it
    defaults to block_k.
    """
    b, h, lq, d = q.shape
    lk, dv = k.shape[2], v.shape[3]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    out = torch.empty(b, h, lq, dv, dtype=q.dtype, device=q.device)
    if correction is not None:
        c_num = correction.numerator.float()
        c_den = correction.denominator.float()
        # denominator and shift share one stride set in the kernel, so give them one memory layout.
        c_den, c_shift = c_den.contiguous(), correction.shift.float().contiguous()
        corr_args = [c_num, c_den, c_shift]
        corr_strides = list(c_num.stride()) + list(c_den.stride()[:3])
    else:
        corr_args = [out, out, out]  # never read: HAS_CORRECTION is a compile-time False
        corr_strides = [0] * 7
    # EVEN_N: no key tile reaches past k_len. Tiles split whole key blocks, so only lk % block_k decides it (a tile
    # of the last block can lie wholly past k_len even when lk % BLOCK_N == 0).
    meta = dict(EVEN_N=lk % layout.block_k == 0, HEAD_DIM=d, HEAD_DIM_V=dv,
                BLOCK_M=layout.block_q, BLOCK_K=layout.block_k,
                EVEN_M=lq % layout.block_q == 0, HAS_CORRECTION=correction is not None,
                INPUT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32")
    args = [q, k, v, out, layout.kv_indices, layout.kv_counts, *corr_args,
            scale * LOG2E, lq, lk, h, 1 << (max(lq, lk) - 1).bit_length(),
            *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            *_strides(layout.kv_indices, 3), layout.kv_indices.stride(3),
            *_strides(layout.kv_counts, 3),
            *corr_strides]
    grid = (layout.n_q_blocks, b * h)
    if block_n is None and interpreting():
        block_n = layout.block_k
    if block_n is not None and (not _pow2_in(block_n, MIN_BLOCK, layout.block_k) or layout.block_k % block_n):
        raise ValueError(f"block_n {block_n} must be a power of two >= {MIN_BLOCK} dividing block_k {layout.block_k}")
    # Triton launches on the current CUDA device, which need not be the tensors' one.
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        if block_n is not None:
            _kernel(autotuned=False)[grid](*args, BLOCK_N=block_n, **meta)
        else:
            _kernel(autotuned=True)[grid](*args, **meta)
    return out
