"""Spectrum's Chebyshev ridge forecaster and the predictor configs."""
import pytest
import torch

from dit_accel.accel.caching.predictors import BlendedResidual, ForecastConfig, TaylorResidual, predictor_nbytes
from dit_accel.accel.caching.spectral import SpectralResidual, chebyshev_basis


def test_chebyshev_basis_matches_the_closed_form():
    tau = torch.linspace(-1, 1, 7)
    basis = chebyshev_basis(tau, 3)
    assert torch.allclose(basis[:, 2], 2 * tau ** 2 - 1)
    assert torch.allclose(basis[:, 3], 4 * tau ** 3 - 3 * tau, atol=1e-6)
    assert torch.allclose(basis, torch.cos(torch.arange(4) * torch.arccos(tau)[:, None]), atol=1e-5)


def _feature(t: float) -> torch.Tensor:
    """Two rows of a feature that is quadratic in time."""
    base = torch.arange(6, dtype=torch.float64).view(2, 3)
    return base + 0.5 * t - 2.0 * t * t


def test_a_quadratic_is_recovered_far_ahead_with_a_tiny_ridge():
    fit = SpectralResidual(degree=2, ridge=1e-9, window=6)
    for t in (1.0, 0.9, 0.8, 0.7):
        fit.update(torch.ones(2, dtype=torch.bool), _feature(t), t)
    assert torch.allclose(fit.predict(0.2), _feature(0.2), atol=1e-4)


def test_rows_not_computed_at_an_entry_ignore_it():
    fit = SpectralResidual(degree=1, ridge=1e-9, window=6)
    fit.update(torch.ones(2, dtype=torch.bool), _feature(1.0), 1.0)
    garbage = _feature(0.9).clone()
    garbage[1] = 1e6  # row 1 was not computed at t=0.9: its value there is whatever was in the tensor
    fit.update(torch.tensor([True, False]), garbage, 0.9)
    fit.update(torch.ones(2, dtype=torch.bool), _feature(0.8), 0.8)
    prediction = fit.predict(0.7)
    assert prediction[1].abs().max() < 100, "row 1's uncomputed entry leaked into its forecast"


def test_window_bounds_the_memory_held():
    fit = SpectralResidual(degree=2, ridge=0.1, window=3)
    for t in (1.0, 0.9, 0.8, 0.7, 0.6):
        fit.update(torch.ones(2, dtype=torch.bool), _feature(t).float(), t)
    assert len(fit.values) == 3
    assert fit.nbytes == predictor_nbytes(fit) == 3 * 6 * 4


def test_blend_weights_the_taylor_term():
    config = ForecastConfig("spectral_taylor", order=1, degree=1, ridge=1e-9, window=4, blend=1.0)
    blended = config.build()
    assert isinstance(blended, BlendedResidual)
    taylor = TaylorResidual(1)
    for t in (1.0, 0.8):
        blended.update(torch.ones(2, dtype=torch.bool), _feature(t), t)
        taylor.update(torch.ones(2, dtype=torch.bool), _feature(t), t)
    assert torch.allclose(blended.predict(0.5), taylor.predict(0.5))


@pytest.mark.parametrize("bad", [dict(method="fourier"), dict(order=4), dict(degree=9), dict(ridge=-1.0),
                                 dict(window=0), dict(blend=1.5)])
def test_bad_settings_raise(bad):
    with pytest.raises(ValueError):
        ForecastConfig(**bad)
