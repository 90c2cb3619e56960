"""Per-layer sparsity budgets calibrated on a dense warm-up step ("calibrated" allocation).

Layers differ a lot in how much error the same sparsity costs (on the reference model two of eight layers carry most of
it), so a uniform budget wastes blocks on layers that need few. On the last dense warm-up step, where the exact output
is computed anyway, each layer's policy is tried at a few keep counts around the target on a strided subset of query
blocks and its relative error measured; afterwards blocks are handed out greedily to the layer whose error falls most
per block, until the layers' mean keep count equals the target (1 - sparsity) x blocks. The run's sparsity is
unchanged but for the calibration's own work: the
sampled rows' dense scores are counted as work done.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import torch

from .blocks import Budget, gather_tokens, n_blocks
from .policies import PolicyInput
from .policies.base import MaskPolicy

SPAN = 4          # keep counts tried: the target's +- SPAN blocks
ROW_STRIDE = 4    # every ROW_STRIDE-th query block is measured


@dataclass
class Calibration:
    """Measured errors per layer position: {position: {keep count: relative error}}, and the blocks per row."""

    sums: dict[int, dict[int, float]] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    blocks: int = 0

    def add(self, position: int, blocks: int, errors: dict[int, float]) -> None:
        """One measured call (a layer may have several per step: cond and uncond run separately in ComfyUI)."""
        if self.blocks and blocks != self.blocks:
            return  # another sequence length (a second resolution): keep the first one's measurement
        self.blocks = blocks
        sums = self.sums.setdefault(position, {})
        for keep, error in errors.items():
            sums[keep] = sums.get(keep, 0.0) + error
        self.counts[position] = self.counts.get(position, 0) + 1

    @property
    def errors(self) -> dict[int, dict[int, float]]:
        return {p: {k: e / self.counts[p] for k, e in sums.items()} for p, sums in self.sums.items()}

    def allocate(self, total_keep: int) -> dict[int, int]:
        return allocate(self.errors, total_keep)


def keep_counts(target_keep: int, blocks: int, span: int = SPAN) -> list[int]:
    return list(range(max(1, target_keep - span), min(blocks, target_keep + span) + 1))


def allocate(errors: dict[int, dict[int, float]], total_keep: int) -> dict[int, int]:
    """Keep count per layer, each among its measured counts, summing to total_keep (as close as the ranges allow).

    Greedy on each layer's lower convex hull: the next blocks go to the layer whose error falls most per block, looking
    past flat stretches (a layer's curve is made non-increasing first: more blocks never hurt, a measured rise is
    noise)."""
    if not errors:
        return {}
    curves: dict[int, list[tuple[int, float]]] = {}
    for layer, measured in errors.items():
        points, best = [], math.inf
        for keep in sorted(measured):
            best = min(best, measured[keep])
            points.append((keep, best))
        curves[layer] = points
    index = {layer: 0 for layer in curves}
    budget = total_keep - sum(points[0][0] for points in curves.values())
    heap: list[tuple[float, int, int]] = []

    def push(layer: int) -> None:
        """Queue the layer's best next move within the remaining budget: (−error drop per block, layer, target)."""
        i, points = index[layer], curves[layer]
        k0, e0 = points[i]
        moves = [((e0 - e) / (k - k0), j) for j, (k, e) in enumerate(points[i + 1:], i + 1) if k - k0 <= budget]
        if moves:
            rate, j = max(moves, key=lambda m: (m[0], -m[1]))
            heapq.heappush(heap, (-rate, layer, j))

    for layer in curves:
        push(layer)
    while heap and budget > 0:
        _, layer, j = heapq.heappop(heap)
        step = curves[layer][j][0] - curves[layer][index[layer]][0]
        if step > budget:  # queued before the budget shrank
            push(layer)
            continue
        budget -= step
        index[layer] = j
        push(layer)
    return {layer: curves[layer][index[layer]][0] for layer in curves}


def measure(policy: MaskPolicy, inp: PolicyInput, exact: torch.Tensor, keeps: list[int],
            stride: int = ROW_STRIDE) -> tuple[dict[int, float], float, float]:
    """Relative error of `policy` against the exact output `exact` (B, H, L, Dv) at each keep count, on every
    `stride`-th query block. The sampled rows' scores against all keys are computed once and every trial masks them
    (the kernel's merge rule, see kernels/block_sparse/layout.py). Returns ({keep: error}, query x key token pairs
    computed: the sampled rows times the keys, once; the trials' estimate work, in the same pairs)."""
    blk = inp.block
    nq, nk = n_blocks(inp.q.shape[2], blk), n_blocks(inp.k.shape[2], blk)
    sampled = torch.arange(0, nq, stride, device=inp.q.device)
    errors: dict[int, float] = {}
    scores, rows, passes, estimate = None, None, 0, 0.0
    for keep in keeps:
        sel = policy.select(PolicyInput(inp.q, inp.k, inp.v, inp.grid, blk, Budget(1.0 - keep / nk), inp.scale))
        q, k, v, ref = inp.q, inp.k, inp.v, exact
        if sel.q_order is not None:
            q, ref = gather_tokens(q, sel.q_order), gather_tokens(ref, sel.q_order)
        if sel.k_order is not None:
            k, v = gather_tokens(k, sel.k_order), gather_tokens(v, sel.k_order)
        rows = (sampled.view(-1, 1) * blk + torch.arange(blk, device=q.device)).reshape(-1)
        rows = rows[rows < q.shape[2]]
        estimate += sel.estimate_cost * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]
        reordered = sel.q_order is not None or sel.k_order is not None
        if reordered or scores is None:  # a token order of its own per trial: its own scores
            scores = torch.einsum("bhld,bhmd->bhlm", q.index_select(2, rows).float(), k.float()) * inp.scale
            passes += 1
        s = scores
        visited = sel.mask.expand(q.shape[0], q.shape[1], -1, -1).index_select(2, rows // blk)
        visited = visited.repeat_interleave(blk, dim=-1)[..., :k.shape[2]]
        s = s.masked_fill(~visited, float("-inf"))
        top = s.amax(-1)
        c = sel.correction
        if c is not None:
            top = torch.maximum(top, c.shift.index_select(2, rows))
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        p = torch.exp(s - top.unsqueeze(-1))
        num, den = p @ v.float(), p.sum(-1)
        if c is not None:
            w = torch.exp(c.shift.index_select(2, rows) - top)
            num = num + c.numerator.index_select(2, rows) * w.unsqueeze(-1)
            den = den + c.denominator.index_select(2, rows) * w
        out = num / den.clamp_min(1e-30).unsqueeze(-1)
        ref = ref.index_select(2, rows).float()
        errors[keep] = float((out - ref).norm() / ref.norm().clamp_min(1e-30))
    work = float(inp.q.shape[0] * inp.q.shape[1] * (0 if rows is None else rows.numel()) * inp.k.shape[2])
    return errors, work * passes, estimate
