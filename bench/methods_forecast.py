"""Bench methods of forecasting: each forecaster at 4x (computes at most 5 steps apart: 5 of 20 steps) and 6.7x
(at most 10 apart: 3 of 20), so methods compare at equal compute."""
from __future__ import annotations

from ..accel.forecasting.methods import ForecastSettings
from .methods import BenchMethod, register_method

_DESCRIPTIONS = {
    "taylorseer": "TaylorSeer: 1st-order Taylor forecast of the model output",
    "spectrum": "Spectrum: Chebyshev ridge fit of the output, blended with the Taylor term",
    "cg-taylor": "CG-Taylor: first block every step, its forecast error gates the rest (stack forecast)",
    "spectrum-plan": "ours: spectral fit, computes placed by a forecast-error plan over the sigma schedule",
}


def _register(name: str, settings: ForecastSettings, description: str) -> None:
    register_method(BenchMethod(name, description, lambda steps, s=settings: [s.patch()]))


for _method, _text in _DESCRIPTIONS.items():
    if _method == "cg-taylor":
        _register(_method, ForecastSettings(_method, interval=5, threshold=0.1), _text + ", threshold 0.1")
        # The most CG-Taylor reaches on the 8-block reference model: it forecasts whatever its probe allows, yet the
        # probe (1 of 8 blocks every step) keeps it under 4x; 6x is out of its reach there.
        _register(f"{_method}-4x", ForecastSettings(_method, interval=10, threshold=1.0),
                  _text + ", threshold 1 (~3.9x)")
        continue
    _register(_method, ForecastSettings(_method, interval=5), _text + ", 4x")
    _register(f"{_method}-6x", ForecastSettings(_method, interval=10), _text + ", 6.7x")
_register("taylorseer-stack", ForecastSettings("taylorseer", interval=5, granularity="stack"),
          "TaylorSeer on the block stack's residual, 4x (blocks only: embedder and head still run)")
_register("taylorseer-block", ForecastSettings("taylorseer", interval=5, granularity="block"),
          "TaylorSeer on each block's residual, 4x (blocks only)")
_register("reuse", ForecastSettings("taylorseer", interval=5, order=0),
          "plain reuse of the last computed model output (order 0), 4x: the baseline every forecaster must beat")
_register("reuse-6x", ForecastSettings("taylorseer", interval=10, order=0), "plain output reuse, 6.7x")
