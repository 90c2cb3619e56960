"""Spectrum's forecaster: a feature as a smooth function of time, fitted on a Chebyshev basis by ridge regression.

"Adaptive Spectral Feature Forecasting for Diffusion Sampling Acceleration" (Spectrum, CVPR 2026, arXiv 2603.01623)
fits each cached feature over the computed steps with Chebyshev polynomials of normalised time and evaluates the fit
at a skipped step. A global fit does not compound its error with the stride the way a chain of finite differences
does, so it can forecast far ahead.

Here the fit is linear in the stored features: the prediction at time t* is sum_p w_p(t*) F_p, with scalar weights
from a (degree+1)-sized ridge system per batch row (solved in closed form on the features' device). So the forecaster
holds `window` past features and never a per-element coefficient tensor, and a row that was not computed at some
step simply gives that entry weight zero.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


def chebyshev_basis(tau: torch.Tensor, degree: int) -> torch.Tensor:
    """T_0..T_degree at `tau` (any shape, values in [-1, 1]) -> shape (*tau.shape, degree + 1)."""
    terms = [torch.ones_like(tau)]
    if degree >= 1:
        terms.append(tau)
    for _ in range(2, degree + 1):
        terms.append(2 * tau * terms[-1] - terms[-2])
    return torch.stack(terms, dim=-1)


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *[1] * (like.dim() - 1))


@dataclass
class SpectralResidual:
    """History of one feature (a block's or the stack's residual) for one stream, and its Chebyshev ridge fit.

    degree: highest Chebyshev order; ridge: strength of the penalty, which grows with the order (k^2) so that a
    short history falls back to a low-order fit instead of wild high orders; window: computed steps kept (the fit's
    points and the memory held). Time is normalised to [-1, 1] by the largest time seen (sigma falls from ~1 to 0).
    """

    degree: int = 2
    ridge: float = 0.1
    window: int = 6
    values: list[torch.Tensor] = field(default_factory=list)
    times: list[torch.Tensor] = field(default_factory=list)     # (rows,) float32
    valid: list[torch.Tensor] = field(default_factory=list)     # (rows,) bool: the row was computed at that entry
    time_scale: float = 0.0

    @property
    def empty(self) -> bool:
        return not self.values

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.values)

    def update(self, computed: torch.Tensor, value: torch.Tensor, time: float, all_rows: bool = False) -> None:
        self.time_scale = max(self.time_scale, abs(float(time)))
        self.values.append(value)
        self.times.append(torch.full((value.shape[0],), float(time), device=value.device, dtype=torch.float32))
        self.valid.append(computed.clone())
        if len(self.values) > self.window:
            del self.values[0], self.times[0], self.valid[0]

    def weights(self, time: float) -> torch.Tensor:
        """(rows, entries) weights of the stored features that give the fit's value at `time`."""
        scale = self.time_scale or 1.0
        # The (degree+1)-sized systems are solved in float64: they are tiny, and float32 loses the far-ahead forecast.
        tau = torch.stack(self.times, dim=1).double() / scale * 2 - 1             # (rows, P)
        phi = chebyshev_basis(tau, self.degree)                                   # (rows, P, d+1)
        w = torch.stack(self.valid, dim=1).to(phi.dtype)                          # (rows, P)
        # A floor keeps the system solvable with fewer points than coefficients (and for a row with no valid entry,
        # whose weights come out zero anyway); it is far below any ridge worth setting.
        penalty = max(self.ridge, 1e-10) * torch.arange(self.degree + 1, device=phi.device, dtype=phi.dtype) ** 2
        penalty[0] = 1e-10
        gram = phi.transpose(1, 2) @ (phi * w.unsqueeze(-1)) + torch.diag(penalty)  # (rows, d+1, d+1)
        target = torch.full((phi.shape[0], 1), float(time) / scale * 2 - 1, device=phi.device, dtype=phi.dtype)
        phi_star = chebyshev_basis(target, self.degree)                            # (rows, 1, d+1)
        # w_p = phi*^T G^-1 phi_p W_p: solve once per row for G^-1 phi*.
        solved = torch.linalg.solve(gram, phi_star.transpose(1, 2))               # (rows, d+1, 1)
        return (phi @ solved).squeeze(-1) * w                                     # (rows, P)

    def predict(self, time: float) -> torch.Tensor:
        weights = self.weights(time)
        out = torch.zeros_like(self.values[-1])
        for p, value in enumerate(self.values):
            out = out + _rows(weights[:, p], value).to(value.dtype) * value
        return out
