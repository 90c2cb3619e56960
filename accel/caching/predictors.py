"""What a skipped block (or span of blocks) emits: a predictor of its residual, fed on the steps it was computed.

Order 0 reuses the last computed residual (FBCache, E-DiT block caching). Order n >= 1 extrapolates it with a
Taylor expansion built from finite differences of the last n+1 computed values (TaylorSeer: "From Reusing to
Forecasting: Accelerating Diffusion Models with TaylorSeers"), in sigma, the flow's own time.

All tensors are per batch row: rows of one stream are computed at different steps when their gates disagree, so each
row keeps its own last step and its own differences. Updates and predictions are masked tensor ops, no host sync.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field

import torch


def _rows_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *[1] * (like.dim() - 1))


@dataclass
class TaylorResidual:
    """Residual history of one block (or span) for one stream; `order` 0 is plain reuse.

    TaylorSeer's form: the k-th term is the k-th backward difference divided by the last interval^k, and the
    forecast is Σ_k term_k · Δt^k / k!. It is exact for linear residuals; for curved ones its backward differences
    lag, which damps the extrapolation. Measured on the reference model (2.5x, second order), that damping is worth
    11 dB over Newton's exact-for-quadratics form (36.5 vs 25.5 dB), which overshoots.
    """

    # An update leaves the rows outside `computed` exactly as they were: one with no computed row changes nothing.
    masked_update = True
    order: int = 0
    terms: list[torch.Tensor] = field(default_factory=list)  # [value, 1st difference, ...] at the last compute
    last_time: torch.Tensor | None = None                    # (rows,) sigma of the last compute
    count: torch.Tensor | None = None                        # (rows,) computes seen, caps the usable order

    @property
    def empty(self) -> bool:
        return not self.terms

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.terms)

    def update(self, computed: torch.Tensor, value: torch.Tensor, time: float) -> None:
        """Record `value` at `time` for the rows in `computed` (a (rows,) bool mask); other rows keep their history."""
        t = torch.full((value.shape[0],), float(time), device=value.device, dtype=torch.float32)
        if self.empty:
            self.terms = [value] + [torch.zeros_like(value) for _ in range(self.order)]
            self.last_time, self.count = t, computed.to(torch.int32)
            return
        dt = t - self.last_time          # negative: sigma falls as sampling proceeds
        moved = dt.abs() > 1e-6          # a second call at the same sigma carries no slope information
        safe_dt = _rows_mask(torch.where(moved, dt, torch.ones_like(dt)), value).to(value.dtype)
        new_terms = [value]
        for k in range(1, self.order + 1):
            diff = (new_terms[k - 1] - self.terms[k - 1]) / safe_dt
            # Too little history: no k-th term yet; same sigma again: keep the slope we had.
            fallback = torch.where(_rows_mask(moved, value), torch.zeros_like(diff), self.terms[k])
            new_terms.append(torch.where(_rows_mask((self.count >= k) & moved, value), diff, fallback))
        mask = _rows_mask(computed, value)
        self.terms = [torch.where(mask, new, old) for new, old in zip(new_terms, self.terms)]
        self.last_time = torch.where(computed, t, self.last_time)
        self.count = torch.where(computed & moved, self.count + 1, self.count)

    def predict(self, time: float) -> torch.Tensor:
        """The residual expected at `time`: value + Σ_k term_k · Δt^k / k!  (Δt is negative: sigma decreases)."""
        out = self.terms[0]
        if self.order == 0:
            return out
        dt = _rows_mask(float(time) - self.last_time, out).to(out.dtype)
        for k in range(1, self.order + 1):
            out = out + self.terms[k] * dt ** k / math.factorial(k)
        return out
