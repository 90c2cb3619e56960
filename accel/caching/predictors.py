"""What a skipped block, span of blocks or step emits: a predictor of its value, fed on the steps it was computed.

  taylor           TaylorSeer's finite-difference expansion (order 0 = plain reuse of the last value): "From Reusing
                   to Forecasting: Accelerating Diffusion Models with TaylorSeers"; FBCache and E-DiT reuse (order 0)
  spectral         Spectrum's Chebyshev ridge fit over the computed steps (`spectral.py`)
  spectral_taylor  the two blended, as the ComfyUI ports of Spectrum do: (1 - blend) spectral + blend taylor

Every predictor has the same small interface (`Predictor`: `empty`, `update(computed, value, time)`, `predict(time)`,
`nbytes`), so gates never know which one they feed; `ForecastConfig.build()` makes one. `StoredHistory` wraps any of
them to keep the history in a narrower dtype or in CPU memory (the memory budget's cheaper rungs, `budget.py`).

All tensors are per batch row: rows of one stream are computed at different steps when their gates disagree, so each
row keeps its own last step and its own differences. Updates and predictions are masked tensor ops, no host sync.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from .spectral import SpectralResidual

METHODS = ("taylor", "spectral", "spectral_taylor")


class Predictor(Protocol):
    @property
    def empty(self) -> bool: ...

    @property
    def nbytes(self) -> int: ...

    def update(self, computed: torch.Tensor, value: torch.Tensor, time: float, all_rows: bool = False) -> None: ...

    def predict(self, time: float) -> torch.Tensor: ...


def _rows_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *[1] * (like.dim() - 1))


def _float32_difference(time: float, last: float) -> float:
    """`time - last` as the device computes it from float32 times (`last_time` holds float32(last))."""
    return float(np.float32(time) - np.float32(last))


def forecast_onto(predictor, start: torch.Tensor, time: float) -> torch.Tensor:
    """`start` plus the predictor's forecast at `time`, as a fresh tensor (added in place on the forecast where the
    predictor hands out one of its own: the same sum, one whole-activation allocation fewer)."""
    onto = getattr(predictor, "predict_onto", None)
    return onto(start, time) if onto is not None else start + predictor.predict(time)


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
    # (last time, computes) while every row has the same ones, known on the host; None once rows differ
    _shared: tuple[float, int] | None = field(default=None, repr=False)

    @property
    def empty(self) -> bool:
        return not self.terms

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.terms)

    def update(self, computed: torch.Tensor, value: torch.Tensor, time: float, all_rows: bool = False) -> None:
        """Record `value` at `time` for the rows in `computed` (a (rows,) bool mask); other rows keep their history.
        `all_rows`: the caller knows on the host that every row is in `computed` (then, while every row has the
        same history, the update takes the few whole-tensor ops of `_update_all_rows`, with the same values)."""
        if self.empty:
            self.terms = [value] + [torch.zeros_like(value) for _ in range(self.order)]
            self.last_time = torch.full((value.shape[0],), float(time), device=value.device, dtype=torch.float32)
            self.count = computed.to(torch.int32)
            self._shared = (float(time), 1) if all_rows else None
            return
        if all_rows and self._shared is not None and self._update_all_rows(value, time):
            return
        t = torch.full((value.shape[0],), float(time), device=value.device, dtype=torch.float32)
        self._shared = None  # rows may now differ: the masked path below from here on
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

    def _update_all_rows(self, value: torch.Tensor, time: float) -> bool:
        """The masked update when every row computes and every row has the same (host-known) last time and count:
        the masks are all true or all false, so each `torch.where` picks one side whole. Bit for bit the masked
        path (the time difference is the same float32 subtraction); False where it does not apply: when the host
        cannot tell for sure that the time moved (the masked path keeps the slope then)."""
        last, count = self._shared
        if not abs(time - last) > 1e-6 + 1e-6 * max(1.0, abs(time), abs(last)):  # margin over float32 rounding
            return False
        rows = value.shape[0]
        t = torch.full((rows,), float(time), device=value.device, dtype=torch.float32)
        dt = _float32_difference(time, last) if value.dtype == torch.float32 else None
        if dt is None:
            safe_dt = _rows_mask(t - self.last_time, value).to(value.dtype)
        new_terms = [value]
        spare = self._spare_buffers(value)
        for k in range(1, self.order + 1):
            if count < k:
                new_terms.append(torch.zeros_like(value))
            elif dt is not None:  # the same float32 division by the host's copy of the interval, in place
                new_terms.append(torch.sub(new_terms[k - 1], self.terms[k - 1], out=spare[k - 1]).div_(dt))
            else:
                new_terms.append(torch.sub(new_terms[k - 1], self.terms[k - 1], out=spare[k - 1]).div_(safe_dt))
        self.terms = new_terms
        self.last_time = t
        self.count = self.count + 1
        self._shared = (float(time), count + 1)
        return True

    def _spare_buffers(self, value: torch.Tensor) -> list[torch.Tensor | None]:
        """Where the all-rows update writes its new differences: into the history's own buffers (the new 1st
        difference into the old last term, the new k-th into the old (k-1)-th, each read only before it is written),
        so a computed step allocates and frees no whole activations of its own (two per block at order 2) and the
        history stays where it was. The terms past the value are the predictor's own (made by it); the value may be a
        caller's tensor and is never written."""
        own = self.terms[1:]
        if any(t.shape != value.shape or t.dtype != value.dtype or t.device != value.device for t in own):
            return [None] * self.order
        return own[-1:] + own[:-1]

    def predict(self, time: float) -> torch.Tensor:
        """The residual expected at `time`: value + Σ_k term_k · Δt^k / k!  (Δt is negative: sigma decreases)."""
        out = self.terms[0]
        if self.order == 0:
            return out
        if self._shared is not None and out.dtype == torch.float32 and self.order <= 2:
            # Every row has the same last time (known on the host): the interval and its square are float32
            # scalars, and each term is a fused multiply-add into one fresh tensor (one pass per term; it rounds
            # once per term where the per-row path below rounds the product and the sum apart).
            dt = _float32_difference(time, self._shared[0])
            out = torch.add(self.terms[0], self.terms[1], alpha=dt)
            if self.order == 2:
                out.add_(self.terms[2], alpha=float(np.float32(dt) * np.float32(dt) / np.float32(2)))
            return out
        dt = _rows_mask(float(time) - self.last_time, out).to(out.dtype)
        for k in range(1, self.order + 1):
            # Δt^k / k! on the (rows,) factor where that rounds the same as dividing the product: k! = 1 or 2 is a
            # power of two, so the whole-tensor division is saved bit-exactly; 6 is not.
            if k == 1:
                out = out + self.terms[1] * dt
            elif k == 2:
                out = out + self.terms[2] * (dt ** 2 / 2)
            else:
                out = out + self.terms[k] * dt ** k / math.factorial(k)
        return out

    def predict_onto(self, start: torch.Tensor, time: float) -> torch.Tensor:
        """`start + predict(time)`, bit for bit (float addition commutes), added into the fresh forecast."""
        if self.order == 0 or start.dtype != self.terms[0].dtype or start.shape != self.terms[0].shape:
            return start + self.predict(time)
        return self.predict(time).add_(start)


@dataclass
class BlendedResidual:
    """Spectrum's global fit blended with a local Taylor term."""

    spectral: SpectralResidual
    taylor: TaylorResidual
    blend: float

    @property
    def empty(self) -> bool:
        return self.spectral.empty

    @property
    def nbytes(self) -> int:
        return self.spectral.nbytes + self.taylor.nbytes

    def update(self, computed, value, time, all_rows: bool = False) -> None:
        self.spectral.update(computed, value, time, all_rows)
        self.taylor.update(computed, value, time, all_rows)

    def predict(self, time: float) -> torch.Tensor:
        return torch.lerp(self.spectral.predict(time), self.taylor.predict(time), self.blend)


@dataclass
class StoredHistory:
    """Any predictor with its history kept in `dtype` (None: the value's own) and, with `offload`, in CPU memory;
    forecasts come back in the value's dtype on its device. Offloading moves each computed value to the host once and
    each forecast back once (a copy per step, no recomputation); off the CPU nothing of the history stays on the
    device, which `device_nbytes` reports to the memory accounting."""

    inner: Predictor
    dtype: torch.dtype | None = None
    offload: bool = False
    like: tuple[torch.dtype, torch.device] | None = None  # the values' own dtype and device

    @property
    def empty(self) -> bool:
        return self.inner.empty

    @property
    def nbytes(self) -> int:
        return self.inner.nbytes

    @property
    def device_nbytes(self) -> int:
        return 0 if self.offload else self.inner.nbytes

    def _storage(self, device: torch.device) -> torch.device:
        return torch.device("cpu") if self.offload else device

    def update(self, computed: torch.Tensor, value: torch.Tensor, time: float, all_rows: bool = False) -> None:
        self.like = (value.dtype, value.device)
        where = self._storage(value.device)
        self.inner.update(computed.to(where), value.to(device=where, dtype=self.dtype or value.dtype), time, all_rows)

    def predict(self, time: float) -> torch.Tensor:
        dtype, device = self.like
        return self.inner.predict(time).to(device=device, dtype=dtype)


@dataclass(frozen=True)
class ForecastConfig:
    """Which predictor, and its knobs.

    order: Taylor order (0 reuse, 1-3 TaylorSeer). degree / ridge / window: Spectrum's Chebyshev degree, ridge
    strength and the number of computed steps the fit uses (and memory holds). blend: weight of the Taylor term in
    `spectral_taylor`.
    """

    method: str = "taylor"
    order: int = 2
    degree: int = 2
    ridge: float = 0.1
    window: int = 6
    blend: float = 0.5
    history_dtype: torch.dtype | None = None  # keep the history in this dtype (None: the model's own)
    offload: bool = False                     # keep the history in CPU memory

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"forecast method must be one of {METHODS}, got {self.method!r}")
        if not 0 <= self.order <= 3:
            raise ValueError(f"Taylor order must be 0 (reuse) to 3, got {self.order}")
        if not 0 <= self.degree <= 8:
            raise ValueError(f"Chebyshev degree must be 0 to 8, got {self.degree}")
        if self.ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {self.ridge}")
        if self.window < 1:
            raise ValueError(f"window must keep at least 1 computed step, got {self.window}")
        if not 0.0 <= self.blend <= 1.0:
            raise ValueError(f"blend must be in [0, 1], got {self.blend}")

    def build(self) -> Predictor:
        predictor = self._build_plain()
        if self.history_dtype is not None or self.offload:
            return StoredHistory(predictor, self.history_dtype, self.offload)
        return predictor

    def _build_plain(self) -> Predictor:
        if self.method == "taylor":
            return TaylorResidual(self.order)
        spectral = SpectralResidual(self.degree, self.ridge, self.window)
        if self.method == "spectral":
            return spectral
        return BlendedResidual(spectral, TaylorResidual(self.order), self.blend)

    def describe(self) -> str:
        if self.method == "taylor":
            return "reuse" if self.order == 0 else f"order-{self.order} Taylor forecast"
        text = f"Chebyshev degree-{self.degree} spectral forecast over {self.window} steps"
        return text if self.method == "spectral" else f"{text}, blended {self.blend:g} with order-{self.order} Taylor"


def predictor_nbytes(predictor) -> int:
    return predictor.nbytes
