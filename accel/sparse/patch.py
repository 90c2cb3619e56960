"""The sparse-attention patch: routes each self-attention call of image/video tokens through a mask policy and the
block-sparse kernel; everything else (cross-attention, text tokens of a joint attention, warm-up steps, dense layers,
short sequences, masked calls) runs the attention the model had before us, dense.

Joint attention ([text | image] in one call, Flux / SD3 / Qwen-Image / HunyuanVideo): text query rows attend densely
over all keys; image query rows visit the policy's blocks of image keys, and the text keys' exact share is merged into
the same softmax as a correction, so text is never sparsified. The text length comes from the block replacement's
"txt" stream (or ComfyUI's `img_slice`); text comes first unless `img_slice` says otherwise.

Per run it counts attention work (query x key token pairs of self/joint calls, dense ones included) and records
`run.metrics["attention_sparsity"]` (1 - computed / all pairs; dense warm-up calls and the calibration's sampled rows
count as computed) and `estimate_cost` (the skipped blocks' estimates, in the same pairs, reported apart); its summary
line lists which route every call took, so a fallback to the slow torch reference is never silent.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from ...kernels.block_sparse import block_sparse_attention, resolve_backend
from ...kernels.logs import warn_once
from ..context import StepContext
from ..patch import AttentionCall, BlockCall, DiTPatch, RunAttention, RunBlock
from ..state import RunState
from .allocation import Calibration, keep_counts, measure
from .blocks import Budget, Grid, gather_tokens, invert, n_blocks
from .config import SparseAttentionConfig
from .correction import exact_correction, merge
from .policies import PolicyInput

KERNEL, REFERENCE = "kernel", "reference fallback"
WARMUP, LAYER, CROSS, OUTSIDE, SHORT, MASKED = ("dense warm-up", "dense layer", "dense cross-attention",
                                                "dense outside blocks", "dense short", "dense masked")


@dataclass
class SparseRun:
    """Run-wide counters and what the block replacement told us about the current block."""

    routes: Counter = field(default_factory=Counter)
    work_total: float = 0.0      # query x key token pairs of the eligible (self / joint) calls
    work_done: float = 0.0       # ... of them actually computed
    estimate_work: float = 0.0   # multiply-adds of the skipped blocks' estimates, in dense-attention pairs
    fallback_reason: str | None = None
    position: int | None = None  # the block being run (position in the block loop)
    text_tokens: int = 0         # text length of the current model call's joint attention
    image_span: tuple[int, int] | None = None  # ComfyUI's img_slice of the current block, when it gives one
    grid_hint: tuple[int, ...] | None = None
    calibration: Calibration = field(default_factory=Calibration)  # "calibrated" allocation: measured errors
    # Visited block pairs of the sparse calls, counted on the device (no host sync per call) and read once at the
    # end of the run; keyed by (query x key token pairs per mask element, device).
    visited: dict[tuple[float, torch.device], torch.Tensor] = field(default_factory=dict)
    keep: dict[int, int] | None = None  # ... and the keep count per layer position, once allocated


class SparseAttentionPatch(DiTPatch):
    name = "sparse_attention"
    run_type = SparseRun

    def __init__(self, config: SparseAttentionConfig = SparseAttentionConfig()):
        self.config = config
        self.policy = config.make_policy()

    # ---- hooks -------------------------------------------------------------------------------------------
    def around_block(self, run: RunState, ctx: StepContext, call: BlockCall, run_block: RunBlock) -> dict:
        # Attention calls carry no block position on every family (SD3, LTX write none) nor the text length of a
        # joint sequence: the block replacement knows both.
        data: SparseRun = self.run_data(run)
        data.position = call.position
        txt = call.args.get("txt")
        if "txt" in call.stream_keys and isinstance(txt, torch.Tensor):
            data.text_tokens = txt.shape[1]
        data.image_span, data.grid_hint = call.image_span, call.grid_hint  # the family's adapter read both
        try:
            return run_block(call.args)
        finally:
            data.position = None

    def around_attention(self, run: RunState, ctx: StepContext, call: AttentionCall,
                         run_attention: RunAttention) -> torch.Tensor:
        data: SparseRun = self.run_data(run)
        cfg = self.config
        if call.kind == "cross":
            data.routes[CROSS] += 1
            return run_attention(call)
        b, h, length, _ = call.q.shape
        work = float(b * h * length * call.k.shape[2])
        data.work_total += work
        route = self._dense_route(data, ctx, call)
        span = self._image_span(data, call) if route is None else None
        if route is None and (span is None or span[1] - span[0] < max(cfg.min_tokens, 2 * cfg.block_size)):
            route = SHORT
        if route is not None:
            data.routes[route] += 1
            data.work_done += work
            out = run_attention(call)
            if route == WARMUP and cfg.allocation == "calibrated" and ctx.step == cfg.warmup_steps - 1:
                self._calibrate(data, call, out)
            return out
        out, done = self._sparse(run, data, call, span)
        data.work_done += done
        return out

    def on_run_end(self, run: RunState) -> str | None:
        data: SparseRun = self.run_data(run)
        if not data.routes:
            return None
        for (pairs, _), count in data.visited.items():  # host sync: once per run, for the report
            data.work_done += pairs * int(count)
        sparsity = 1.0 - data.work_done / data.work_total if data.work_total else 0.0
        run.metrics["attention_sparsity"] = sparsity
        run.metrics["estimate_cost"] = data.estimate_work / data.work_total if data.work_total else 0.0
        routes = ", ".join(f"{name} {count}" for name, count in data.routes.most_common())
        line = (f"sparse attention ({self.config.describe()}): {sparsity:.1%} of self-attention work skipped; "
                f"attention calls by route: {routes}")
        if data.keep:
            line += "; key blocks kept per layer (of %d): %s" % (data.calibration.blocks, ", ".join(
                f"{p}: {k}" for p, k in sorted(data.keep.items())))
        if data.routes[REFERENCE]:
            line += f". The Triton kernel could not run ({data.fallback_reason}): the torch reference computed " \
                    "the sparse calls, which is slower than dense attention"
        return line

    # ---- decisions ---------------------------------------------------------------------------------------
    def _dense_route(self, data: SparseRun, ctx: StepContext, call: AttentionCall) -> str | None:
        if call.block_kind is None and data.position is None:
            return OUTSIDE
        if 0 <= ctx.step < self.config.warmup_steps:
            return WARMUP
        position = data.position if data.position is not None else call.block_index
        if position is not None and position in self.config.dense_layers:
            return LAYER
        if getattr(call, "mask", None) is not None:
            return MASKED
        return None

    def _image_span(self, data: SparseRun, call: AttentionCall) -> tuple[int, int] | None:
        length = call.q.shape[2]
        if call.kind == "self":
            return 0, length
        if data.image_span is not None and 0 <= data.image_span[0] < data.image_span[1] <= length:
            return data.image_span
        if 0 < data.text_tokens < length:
            return data.text_tokens, length
        return None  # a joint call whose text we cannot place: stay dense

    # ---- per-layer budgets -------------------------------------------------------------------------------
    def _calibrate(self, data: SparseRun, call: AttentionCall, out: torch.Tensor) -> None:
        """Measure this layer's error at a few keep counts against the dense output just computed."""
        cfg = self.config
        position = data.position if data.position is not None else call.block_index
        span = self._image_span(data, call) if call.kind != "cross" else None
        if position is None or span is None or span[1] - span[0] < max(cfg.min_tokens, 2 * cfg.block_size):
            return
        start, end = span
        qi, ki, vi = (t[:, :, start:end] for t in (call.q, call.k, call.v))
        exact = out[:, :, start:end] if (start, end) == (0, call.q.shape[2]) and call.k.shape[2] == end - start \
            else torch.nn.functional.scaled_dot_product_attention(qi, ki, vi)  # image-only attention
        blocks = n_blocks(end - start, cfg.block_size)
        inp = PolicyInput(qi, ki, vi, Grid.infer(end - start, data.grid_hint), cfg.block_size, cfg.budget,
                          qi.shape[-1] ** -0.5)
        errors, work, estimate = measure(self.policy, inp, exact, keep_counts(round((1 - cfg.sparsity) * blocks),
                                                                             blocks))
        data.calibration.add(position, blocks, errors)
        data.work_done += work
        data.estimate_work += estimate

    def _budget(self, data: SparseRun, call: AttentionCall, blocks: int) -> Budget:
        """The configured budget, or this layer's calibrated share of it."""
        cfg = self.config
        if cfg.allocation != "calibrated" or blocks != data.calibration.blocks:
            return cfg.budget
        if data.keep is None:  # the same total of kept blocks as the target, split by measured error
            layers = len(data.calibration.counts)
            data.keep = data.calibration.allocate(round((1 - cfg.sparsity) * blocks * layers))
        position = data.position if data.position is not None else call.block_index
        keep = data.keep.get(position)
        return cfg.budget if keep is None else Budget(1.0 - keep / blocks)

    # ---- the sparse route --------------------------------------------------------------------------------
    def _sparse(self, run: RunState, data: SparseRun, call: AttentionCall,
                span: tuple[int, int]) -> tuple[torch.Tensor, float]:
        """The sparse route's output and its dense-counted work (text keys and rows); the image pairs' share is
        counted on the device, in `data.visited`."""
        cfg = self.config
        q, k, v = call.q, call.k, call.v
        start, end = span
        scale = q.shape[-1] ** -0.5
        qi, ki, vi = q[:, :, start:end], k[:, :, start:end], v[:, :, start:end]
        grid = Grid.infer(end - start, data.grid_hint)
        budget = self._budget(data, call, n_blocks(end - start, cfg.block_size))
        sel = self.policy.select(PolicyInput(qi, ki, vi, grid, cfg.block_size, budget, scale))
        if sel.q_order is not None:
            qi = gather_tokens(qi, sel.q_order)
        if sel.k_order is not None:
            ki, vi = gather_tokens(ki, sel.k_order), gather_tokens(vi, sel.k_order)
        correction = sel.correction
        text = [(0, start), (end, k.shape[2])]
        for t0, t1 in text:  # the text keys' exact share, in the same softmax
            if t1 > t0:
                correction = merge(correction, exact_correction(qi, k[:, :, t0:t1], v[:, :, t0:t1], scale))
        layout = sel.layout(cfg.block_size)
        backend, reason = resolve_backend(qi, ki, vi, layout, cfg.backend)
        if backend == "torch" and cfg.backend == "auto":
            data.fallback_reason = reason
            warn_once(f"sparse-fallback:{reason}", "dit-accel sparse attention: the Triton kernel cannot run here "
                      "(%s); sparse calls use the torch reference path, which is correct but slower than dense "
                      "attention", reason)
        data.routes[KERNEL if backend == "triton" else REFERENCE] += 1
        out_img = block_sparse_attention(qi, ki, vi, layout, correction, scale, backend=backend)
        if sel.q_order is not None:
            out_img = gather_tokens(out_img, invert(sel.q_order))
        b, h, length, _ = q.shape
        img = end - start
        self._count_visited(run, data, sel.mask, b * h * img * img)
        done = float(b * h * img * (k.shape[2] - img))  # text keys
        data.estimate_work += sel.estimate_cost * b * h * img * img
        if start == 0 and end == length:
            return out_img, done
        out = torch.empty(b, h, length, out_img.shape[-1], dtype=out_img.dtype, device=out_img.device)
        out[:, :, start:end] = out_img
        for t0, t1 in text:  # text query rows attend densely over every key
            if t1 > t0:
                out[:, :, t0:t1] = call.backend(q[:, :, t0:t1], k, v)
                done += float(b * h * (t1 - t0) * k.shape[2])
        return out, done

    @staticmethod
    def _count_visited(run: RunState, data: SparseRun, mask: torch.Tensor, image_pairs: int) -> None:
        """Add the visited share of `image_pairs` (the mask's kept blocks) to the run's device-side counter."""
        key = (image_pairs / mask.numel(), mask.device)
        count = data.visited.get(key)
        if count is None:
            with run.persistent():  # kept for the whole run: outside any captured forward
                count = data.visited[key] = torch.zeros((), dtype=torch.int64, device=mask.device)
        count.add_(mask.count_nonzero())
